//! sea-orm entities of the subscribe service's tables.

/// A plan users can subscribe to.
pub mod plan {
    use sea_orm::entity::prelude::*;

    /// Also a subscription's terms, as JSON (`subscription.terms`).
    #[derive(
        Clone, Debug, PartialEq, Eq, DeriveEntityModel, serde::Serialize, serde::Deserialize,
    )]
    #[sea_orm(table_name = "subscribe_plans")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub title: String,
        pub price_minor: i64,
        pub currency: String,
        pub period_days: i32,
        /// Space-separated function slugs; `*` = every function.
        pub functions: String,
        pub token_quota: i64,
        pub generation_quota: i32,
        pub rate_limit_tier: String,
        pub priority: i32,
        /// No longer sold: not listed, not subscribable, not renewed.
        #[serde(default)]
        pub archived: bool,
        /// Promised 95th percentile of a queued generation's 202 → start, ms (0: none).
        #[serde(default)]
        pub sla_queue_p95_ms: i32,
        /// Promised monthly availability of generation, basis points (0: none).
        #[serde(default)]
        pub sla_availability_bp: i32,
        /// A missed month's credit, percent of the price.
        #[serde(default)]
        pub sla_credit_percent: i32,
    }

    impl From<&Model> for crate::domain::Plan {
        fn from(p: &Model) -> Self {
            crate::domain::Plan {
                id: p.id.clone(),
                title: p.title.clone(),
                price: crate::domain::Money { minor: p.price_minor, currency: p.currency.clone() },
                period_days: p.period_days.max(0) as u32,
                functions: p.functions.split_whitespace().map(str::to_owned).collect(),
                token_quota: p.token_quota.max(0) as u64,
                generation_quota: p.generation_quota.max(0) as u32,
                rate_limit_tier: p.rate_limit_tier.clone(),
                priority: p.priority.max(0) as u32,
                archived: p.archived,
                service_level: crate::domain::ServiceLevel::from(p),
            }
        }
    }

    impl From<&Model> for crate::domain::ServiceLevel {
        fn from(p: &Model) -> Self {
            crate::domain::ServiceLevel {
                queue_start_p95_ms: p.sla_queue_p95_ms.max(0) as u32,
                availability_bp: p.sla_availability_bp.max(0) as u32,
                credit_percent: p.sla_credit_percent.max(0) as u32,
            }
        }
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// A user's paid subscription (users without one are on the free plan).
pub mod subscription {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "subscribe_subscriptions")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: Uuid,
        #[sea_orm(unique)]
        pub user_id: Uuid,
        pub plan_id: String,
        /// Stored as its name (`active`, `canceled`, `expired`).
        pub status: crate::domain::SubscriptionStatus,
        pub period_start: DateTimeUtc,
        pub period_end: DateTimeUtc,
        pub cancel_at_period_end: bool,
        pub updated_at: DateTimeUtc,
        /// The plan's terms this period was bought on (its row as JSON); `None` for rows
        /// from before terms were kept (they read the plan's current terms).
        pub terms: Option<String>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// Use within one period. `used + held` never exceeds the plan's quota: holds are taken by a
/// conditional update.
pub mod usage {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "subscribe_usage")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub user_id: Uuid,
        #[sea_orm(primary_key, auto_increment = false)]
        pub period_start: DateTimeUtc,
        pub tokens_used: i64,
        pub tokens_held: i64,
        pub generations_used: i32,
        pub generations_held: i32,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// A reservation of quota for one generation, settled by commit or release, or expired.
pub mod hold {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "subscribe_holds")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: Uuid,
        pub user_id: Uuid,
        pub period_start: DateTimeUtc,
        pub tokens: i64,
        /// held | committed | released | expired
        pub status: String,
        pub actual_tokens: i64,
        /// `{user}:{key}`; unique, so a retried reserve gets the same hold.
        pub idempotency: String,
        pub expires_at: DateTimeUtc,
        pub created_at: DateTimeUtc,
        /// The function it was taken for.
        pub function_id: String,
        /// The plan its user was on when it was taken (`""`: taken before plans were kept).
        pub plan_id: String,
        /// How the generation ended, as its caller said: `completed`, `failed` (by the
        /// platform), `cancelled` (by its owner); `None`: not said (or still held).
        pub outcome: Option<String>,
        /// Queued work: its 202 → start, ms.
        pub queue_wait_ms: Option<i64>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// One plan's service level in one closed month: measured, compared with its promise, and
/// the subscribers credited when it was missed.
pub mod service_record {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "subscribe_service_records")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub plan_id: String,
        /// `YYYY-MM` (UTC).
        #[sea_orm(primary_key, auto_increment = false)]
        pub month: String,
        pub generations: i64,
        pub failed: i64,
        pub queued: i64,
        pub queue_p95_ms: i64,
        pub availability_bp: i32,
        /// The plan's row when the month closed (its promise and price), as JSON.
        pub terms: String,
        pub met: bool,
        /// Subscribers credited.
        pub credits: i32,
        /// Every credit issued (a replica that died mid-way leaves it false for the next).
        pub credits_done: bool,
        pub closed_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// A plan change in progress: at most one per user (see `Subscriptions::subscribe`).
pub mod change {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "subscribe_changes")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub user_id: Uuid,
        /// The change's id; its charge's idempotency key.
        pub change_id: Uuid,
        pub started_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}
