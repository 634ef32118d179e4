//! sea-orm entities of the payment service's tables.

/// One account of the double-entry ledger: a user's wallet in one currency, or a system
/// account (the card processor's side, revenue). Its balance always equals the sum of its
/// postings.
pub mod account {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "payment_accounts")]
    pub struct Model {
        /// `user:{uuid}:{CUR}`, or a shard of a system account:
        /// `system:processor:{name}:{CUR}:{shard}`, `system:revenue:{CUR}:{shard}`.
        #[sea_orm(primary_key, auto_increment = false)]
        pub key: String,
        pub user_id: Option<Uuid>,
        pub currency: String,
        pub balance_minor: i64,
        /// System accounts may go below zero (money from outside); wallets never.
        pub allow_negative: bool,
        pub updated_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// One movement of money (or a refused one), as the user sees it.
pub mod transaction {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "payment_transactions")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: Uuid,
        pub user_id: Uuid,
        /// `skillup.payment.v1.TransactionKind` number.
        pub kind: crate::domain::TransactionKind,
        /// `skillup.payment.v1.TransactionStatus` number.
        pub status: crate::domain::TransactionStatus,
        pub amount_minor: i64,
        pub currency: String,
        pub balance_after_minor: i64,
        /// What the key is unique within: `{kind}:{user}`.
        pub idempotency_scope: String,
        pub idempotency_key: String,
        /// SHA-256 of the request the key was first used with.
        pub request_hash: String,
        pub description: String,
        pub refunded_transaction_id: Option<Uuid>,
        /// For charges: how much of it has been refunded.
        pub refunded_minor: i64,
        pub failure_reason: String,
        pub created_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// One leg of a transaction; a transaction's postings sum to zero.
pub mod posting {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "payment_postings")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: Uuid,
        pub transaction_id: Uuid,
        pub account_key: String,
        /// Signed: negative leaves the account, positive enters it.
        pub amount_minor: i64,
        pub created_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// A payment into a wallet on the provider's hosted page, from creation to its outcome.
pub mod checkout {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "payment_checkouts")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: Uuid,
        pub user_id: Uuid,
        /// `sandbox`, `stripe`, `yookassa`.
        pub provider: String,
        /// The provider's id of the payment, once known (unique per provider).
        pub provider_payment_id: Option<String>,
        pub status: crate::domain::CheckoutStatus,
        pub amount_minor: i64,
        pub currency: String,
        pub return_url: String,
        pub confirmation_url: String,
        pub receipt_email: String,
        /// The user's key (unique per user).
        pub idempotency_key: String,
        /// SHA-256 of the request the key was first used with.
        pub request_hash: String,
        /// The wallet's top-up entry, once paid.
        pub transaction_id: Option<Uuid>,
        pub failure_reason: String,
        pub created_at: DateTimeUtc,
        pub updated_at: DateTimeUtc,
        /// When the reconciliation job next asks the provider about it (while pending).
        pub next_check_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// The sandbox provider's own side: the payments on its hosted page.
pub mod sandbox_payment {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "payment_sandbox_payments")]
    pub struct Model {
        /// `sbx_…`.
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        /// The idempotency key it was created with (unique).
        pub idempotency_key: String,
        pub checkout_id: Uuid,
        pub amount_minor: i64,
        pub currency: String,
        /// `pending`, `succeeded`, `canceled`.
        pub status: String,
        pub reason: String,
        pub created_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// A refund of (part of) a paid checkout to the card, through its provider.
pub mod refund {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "payment_refunds")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: Uuid,
        pub checkout_id: Uuid,
        pub user_id: Uuid,
        pub provider: String,
        /// The provider's id of the refund, once known (unique per provider).
        pub provider_refund_id: Option<String>,
        pub status: crate::domain::RefundStatus,
        pub amount_minor: i64,
        pub currency: String,
        /// The administrator's words.
        pub reason: String,
        pub failure_reason: String,
        /// The administrator's key (unique per checkout).
        pub idempotency_key: String,
        pub request_hash: String,
        /// The wallet's `refund_to_card` entry.
        pub transaction_id: Uuid,
        pub created_at: DateTimeUtc,
        pub updated_at: DateTimeUtc,
        /// When the reconciliation job next asks the provider about it (while pending).
        pub next_check_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}
