//! A generation — a document of its owner's library: the `ai_tasks` row.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "ai_tasks")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub user_id: Uuid,
    /// queued | running | completed | failed | cancelled
    pub status: crate::domain::TaskStatus,
    pub topic: String,
    pub function: String,
    pub locale: String,
    /// The built prompt, JSON `[{role, content}]` (fixed at submission).
    pub messages: String,
    pub max_tokens: i32,
    pub hold_id: Uuid,
    pub priority: i32,
    pub text: Option<String>,
    pub error: Option<String>,
    pub input_tokens: i32,
    pub output_tokens: i32,
    pub provider: String,
    pub model: String,
    pub finish_reason: String,
    pub attempts: i32,
    /// `{user}:{key}`; unique, so a retried submission gets the same task.
    pub idempotency: Option<String>,
    /// The worker run that holds it while running.
    pub claim: Option<String>,
    pub lease_until: Option<DateTimeUtc>,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
    /// inline | stream | queued
    pub delivery: crate::domain::Delivery,
    /// Its owner's title; `None` = the topic.
    pub title: Option<String>,
    pub starred: bool,
    /// The function's parameters, a JSON object.
    pub params: String,
    pub regenerated_from: Option<Uuid>,
    /// A stream its client left: `text` is what was generated until then.
    pub interrupted: bool,
}

impl Model {
    /// A task as submitted: queued, nothing run yet (the caller fills in the request).
    pub fn queued(id: Uuid, user_id: Uuid, hold_id: Uuid, now: DateTimeUtc) -> Self {
        Model {
            id,
            user_id,
            status: crate::domain::TaskStatus::Queued,
            topic: String::new(),
            function: String::new(),
            locale: String::new(),
            messages: "[]".into(),
            max_tokens: 0,
            hold_id,
            priority: 0,
            text: None,
            error: None,
            input_tokens: 0,
            output_tokens: 0,
            provider: String::new(),
            model: String::new(),
            finish_reason: String::new(),
            attempts: 0,
            idempotency: None,
            claim: None,
            lease_until: None,
            created_at: now,
            updated_at: now,
            delivery: crate::domain::Delivery::Queued,
            title: None,
            starred: false,
            params: "{}".into(),
            regenerated_from: None,
            interrupted: false,
        }
    }
}

impl From<&Model> for crate::domain::Task {
    fn from(t: &Model) -> Self {
        let completed = t.status == crate::domain::TaskStatus::Completed;
        crate::domain::Task {
            id: t.id,
            status: t.status,
            topic: t.topic.clone(),
            function: t.function.clone(),
            locale: t.locale.clone(),
            text: t.text.clone(),
            error: t.error.clone(),
            usage: completed.then_some(crate::domain::Usage {
                input: t.input_tokens.max(0) as u32,
                output: t.output_tokens.max(0) as u32,
            }),
            attempts: t.attempts.max(0) as u32,
            created_at: t.created_at,
            updated_at: t.updated_at,
            delivery: t.delivery,
            title: t.title.clone().unwrap_or_else(|| t.topic.clone()),
            starred: t.starred,
            params: serde_json::from_str(&t.params).unwrap_or_default(),
            provider: t.provider.clone(),
            model: t.model.clone(),
            finish_reason: t.finish_reason.clone(),
            regenerated_from: t.regenerated_from,
            interrupted: t.interrupted,
            excerpt: String::new(),
        }
    }
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
