//! sea-orm entities of auth's tables.

pub mod user {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "auth_users")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: Uuid,
        /// Normalised (lower-case); unique.
        #[sea_orm(unique)]
        pub email: String,
        pub name: String,
        pub password_hash: String,
        pub email_verified: bool,
        pub tier: String,
        /// Space-separated.
        pub scopes: String,
        pub is_active: bool,
        pub created_at: DateTimeUtc,
        pub updated_at: DateTimeUtc,
        /// `en` or `ru`.
        pub locale: String,
        /// IANA name.
        pub time_zone: String,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// A login: one refresh-token family.
pub mod session {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "auth_sessions")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: Uuid,
        pub user_id: Uuid,
        pub user_agent: String,
        pub ip: String,
        pub created_at: DateTimeUtc,
        pub last_used_at: DateTimeUtc,
        pub expires_at: DateTimeUtc,
        pub revoked_at: Option<DateTimeUtc>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod refresh_token {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "auth_refresh_tokens")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: Uuid,
        pub session_id: Uuid,
        pub user_id: Uuid,
        /// SHA-256 of the token, hex; the token itself is never stored.
        #[sea_orm(unique)]
        pub token_hash: String,
        pub created_at: DateTimeUtc,
        pub expires_at: DateTimeUtc,
        /// Set once, atomically, by the refresh that spends it.
        pub used_at: Option<DateTimeUtc>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// Single-use emailed tokens: email verification and password reset.
pub mod email_token {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "auth_email_tokens")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: Uuid,
        pub user_id: Uuid,
        /// "verify", "reset" or "email_change".
        pub kind: String,
        #[sea_orm(unique)]
        pub token_hash: String,
        pub created_at: DateTimeUtc,
        pub expires_at: DateTimeUtc,
        pub used_at: Option<DateTimeUtc>,
        /// The address an `email_change` token confirms.
        pub new_email: Option<String>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// A copy of everything SkillUp holds about one person, asked for by them: prepared in the
/// background, kept for a day once ready.
pub mod data_export {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "auth_data_exports")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: Uuid,
        pub user_id: Uuid,
        /// `preparing` (at most one per user), `ready` or `failed`.
        pub status: String,
        pub created_at: DateTimeUtc,
        /// Changes with every claim and outcome: a claim is taken only from the state it read.
        pub updated_at: DateTimeUtc,
        /// While preparing: nobody else takes it before this (a replica is on it, or it waits
        /// to be tried again).
        pub lease_until: DateTimeUtc,
        pub attempts: i32,
        pub ready_at: Option<DateTimeUtc>,
        pub expires_at: Option<DateTimeUtc>,
        pub size_bytes: i64,
        /// The last failure (for operators; people see "failed").
        pub error: String,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// The bytes of a ready export's archive, in order.
pub mod data_export_chunk {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "auth_data_export_chunks")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub export_id: Uuid,
        #[sea_orm(primary_key, auto_increment = false)]
        pub seq: i32,
        pub data: Vec<u8>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// A person's API key: its hash and what the owner sees of it, never the secret.
pub mod api_key {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "auth_api_keys")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: Uuid,
        pub user_id: Uuid,
        pub name: String,
        /// `sk-skillup-` and the secret's first 6 characters.
        pub prefix: String,
        /// SHA-256 of the whole key, hex.
        #[sea_orm(unique)]
        pub secret_hash: String,
        pub created_at: DateTimeUtc,
        /// To the minute: written at most once a minute.
        pub last_used_at: Option<DateTimeUtc>,
        pub expires_at: Option<DateTimeUtc>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// One entry of the append-only audit log (every service's admin actions; see
/// `skillup_kit::audit`). Rows are only ever inserted: triggers refuse UPDATE and DELETE.
pub mod audit_entry {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "auth_audit_log")]
    pub struct Model {
        /// The event's id (UUID v7: time-ordered).
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: Uuid,
        pub occurred_at: DateTimeUtc,
        /// The admin's account, when an account acted.
        pub actor_id: Option<Uuid>,
        /// Readable: the admin's email when stored, `operator:<name>`, `cli:<login>`.
        pub actor: String,
        pub action: String,
        pub target_type: String,
        pub target_id: String,
        /// JSON objects.
        pub before: String,
        pub after: String,
        pub reason: String,
        pub request_id: String,
        pub client_ip: String,
        pub component: String,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}
