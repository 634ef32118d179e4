//! The ai service's own values, valid by construction.

use sea_orm::{DeriveActiveEnum, EnumIter, sea_query::StringLen};

/// Where a queued task is. Stored as its name (`queued`, `running`, …) in `ai_tasks.status`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, EnumIter, DeriveActiveEnum)]
#[sea_orm(rs_type = "String", db_type = "String(StringLen::N(16))")]
pub enum TaskStatus {
    /// Accepted and on the queue, not yet taken by a worker.
    #[sea_orm(string_value = "queued")]
    Queued,
    /// A worker holds it.
    #[sea_orm(string_value = "running")]
    Running,
    /// The text is stored.
    #[sea_orm(string_value = "completed")]
    Completed,
    /// Given up after the last attempt, or refused by the provider; its hold was released.
    #[sea_orm(string_value = "failed")]
    Failed,
    /// Cancelled by its user before it finished.
    #[sea_orm(string_value = "cancelled")]
    Cancelled,
}

impl TaskStatus {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            TaskStatus::Queued => "queued",
            TaskStatus::Running => "running",
            TaskStatus::Completed => "completed",
            TaskStatus::Failed => "failed",
            TaskStatus::Cancelled => "cancelled",
        }
    }

    /// Nothing will change it any more.
    pub fn is_final(self) -> bool {
        matches!(self, TaskStatus::Completed | TaskStatus::Failed | TaskStatus::Cancelled)
    }
}

impl std::fmt::Display for TaskStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use sea_orm::{ActiveEnum, Iterable};

    use super::TaskStatus;

    #[test]
    fn every_status_is_stored_under_its_name() {
        for s in TaskStatus::iter() {
            assert_eq!(s.to_value(), s.as_str());
            assert_eq!(TaskStatus::try_from_value(&s.as_str().to_owned()).unwrap(), s);
        }
        assert!(TaskStatus::try_from_value(&"done".to_owned()).is_err());
    }
}
