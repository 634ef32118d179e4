//! Every statement on `auth_audit_log`: entries are inserted once (a redelivered event meets
//! its row and changes nothing) and listed; nothing here, or anywhere, updates or deletes one.

use sea_orm::{
    ColumnTrait, Condition, DatabaseConnection, DbErr, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect, sea_query::OnConflict,
};
use uuid::Uuid;

use super::entities::audit_entry;

/// Which entries a listing shows.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub actor_id: Option<Uuid>,
    /// An action, or a family ending in `.`.
    pub action: Option<String>,
    pub target_id: Option<String>,
    pub since: Option<chrono::DateTime<chrono::Utc>>,
    pub until: Option<chrono::DateTime<chrono::Utc>>,
    /// Entries older than this one (the cursor).
    pub before: Option<Uuid>,
}

#[derive(Clone)]
pub struct AuditStore {
    db: DatabaseConnection,
}

impl AuditStore {
    pub fn new(db: DatabaseConnection) -> Self {
        Self { db }
    }

    /// Stores `entry` unless an entry with its id is there already. True when stored now.
    pub async fn insert(&self, entry: audit_entry::Model) -> Result<bool, DbErr> {
        let res = audit_entry::Entity::insert(audit_entry::ActiveModel::from(entry))
            .on_conflict(OnConflict::column(audit_entry::Column::Id).do_nothing().to_owned())
            .exec_without_returning(&self.db)
            .await?;
        Ok(res > 0)
    }

    /// Entries matching `filter`, newest first, at most `limit`.
    pub async fn list(
        &self,
        filter: &AuditFilter,
        limit: u64,
    ) -> Result<Vec<audit_entry::Model>, DbErr> {
        use audit_entry::Column as C;
        let mut cond = Condition::all();
        if let Some(a) = filter.actor_id {
            cond = cond.add(C::ActorId.eq(a));
        }
        match filter.action.as_deref() {
            Some(family) if family.ends_with('.') => {
                cond = cond.add(C::Action.starts_with(family));
            }
            Some(action) => cond = cond.add(C::Action.eq(action)),
            None => {}
        }
        if let Some(t) = &filter.target_id {
            cond = cond.add(C::TargetId.eq(t.clone()));
        }
        if let Some(t) = filter.since {
            cond = cond.add(C::OccurredAt.gte(t));
        }
        if let Some(t) = filter.until {
            cond = cond.add(C::OccurredAt.lt(t));
        }
        if let Some(id) = filter.before {
            cond = cond.add(C::Id.lt(id));
        }
        audit_entry::Entity::find()
            .filter(cond)
            .order_by_desc(C::Id)
            .limit(limit)
            .all(&self.db)
            .await
    }
}
