//! The payment service's migrations (own history table).

use sea_orm_migration::{prelude::*, schema::*};

skillup_kit::migrator!(
    Migrator,
    "payment_migrations",
    [
        M0001Init,
        skillup_kit::outbox::Migration::new("m0002_outbox", super::OUTBOX),
        M0003EnumNames,
        M0004Checkouts,
        M0005Refunds,
    ]
);

struct M0001Init;

skillup_kit::migration_name!(M0001Init, "m0001_init");

#[async_trait::async_trait]
impl MigrationTrait for M0001Init {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table("payment_accounts")
                .if_not_exists()
                .col(string_len("key", 128).primary_key())
                .col(uuid_null("user_id"))
                .col(string_len("currency", 3))
                .col(big_integer("balance_minor"))
                .col(boolean("allow_negative"))
                .col(timestamp_with_time_zone("updated_at"))
                .to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table("payment_transactions")
                .if_not_exists()
                .col(uuid("id").primary_key())
                .col(uuid("user_id"))
                .col(integer("kind"))
                .col(integer("status"))
                .col(big_integer("amount_minor"))
                .col(string_len("currency", 3))
                .col(big_integer("balance_after_minor"))
                .col(string_len("idempotency_scope", 128))
                .col(string_len("idempotency_key", 128))
                .col(string_len("request_hash", 64))
                .col(string_len("description", 200))
                .col(uuid_null("refunded_transaction_id"))
                .col(big_integer("refunded_minor"))
                .col(string_len("failure_reason", 500))
                .col(timestamp_with_time_zone("created_at"))
                .to_owned(),
        )
        .await?;
        // A key is used once per scope: concurrent duplicates meet here and execute once.
        m.create_index(
            Index::create()
                .name("payment_transactions_idempotency")
                .table("payment_transactions")
                .col("idempotency_scope")
                .col("idempotency_key")
                .unique()
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("payment_transactions_user")
                .table("payment_transactions")
                .col("user_id")
                .col("id")
                .to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table("payment_postings")
                .if_not_exists()
                .col(uuid("id").primary_key())
                .col(uuid("transaction_id"))
                .col(string_len("account_key", 128))
                .col(big_integer("amount_minor"))
                .col(timestamp_with_time_zone("created_at"))
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("payment_postings_account")
                .table("payment_postings")
                .col("account_key")
                .to_owned(),
        )
        .await
    }
}

/// Entry kinds and statuses stored as names (`top_up`, `succeeded`, …) instead of the protobuf
/// enums' numbers: the ledger no longer depends on the wire contract's numbering. (The
/// idempotency scope keeps the numbers it was written with: see `TransactionKind`.)
struct M0003EnumNames;

skillup_kit::migration_name!(M0003EnumNames, "m0003_enum_names");

#[async_trait::async_trait]
impl MigrationTrait for M0003EnumNames {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        let m = m.begin().await?;
        let table = "payment_transactions";
        let kinds = [(1, "top_up"), (2, "charge"), (3, "refund")];
        skillup_kit::db::enum_numbers_to_names(&m, table, "kind", &kinds, "charge").await?;
        let statuses = [(1, "pending"), (2, "succeeded"), (3, "failed")];
        skillup_kit::db::enum_numbers_to_names(&m, table, "status", &statuses, "failed").await?;
        m.commit().await
    }
}

/// Checkouts on the providers' hosted pages, and the sandbox provider's own payments.
struct M0004Checkouts;

skillup_kit::migration_name!(M0004Checkouts, "m0004_checkouts");

#[async_trait::async_trait]
impl MigrationTrait for M0004Checkouts {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table("payment_checkouts")
                .if_not_exists()
                .col(uuid("id").primary_key())
                .col(uuid("user_id"))
                .col(string_len("provider", 16))
                .col(string_len_null("provider_payment_id", 128))
                .col(string_len("status", 16))
                .col(big_integer("amount_minor"))
                .col(string_len("currency", 3))
                .col(string_len("return_url", 2000))
                .col(string_len("confirmation_url", 2000))
                .col(string_len("receipt_email", 254))
                .col(string_len("idempotency_key", 128))
                .col(string_len("request_hash", 64))
                .col(uuid_null("transaction_id"))
                .col(string_len("failure_reason", 500))
                .col(timestamp_with_time_zone("created_at"))
                .col(timestamp_with_time_zone("updated_at"))
                .col(timestamp_with_time_zone("next_check_at"))
                .to_owned(),
        )
        .await?;
        // A user's key makes one checkout; a provider's payment belongs to one checkout.
        for (name, cols) in [
            ("payment_checkouts_key", ["user_id", "idempotency_key"]),
            ("payment_checkouts_provider_payment", ["provider", "provider_payment_id"]),
        ] {
            let mut index = Index::create();
            index.name(name).table("payment_checkouts").unique();
            for c in cols {
                index.col(c);
            }
            m.create_index(index.to_owned()).await?;
        }
        for (name, cols) in [
            ("payment_checkouts_user", ["user_id", "id"]),
            ("payment_checkouts_due", ["status", "next_check_at"]),
        ] {
            let mut index = Index::create();
            index.name(name).table("payment_checkouts");
            for c in cols {
                index.col(c);
            }
            m.create_index(index.to_owned()).await?;
        }
        m.create_table(
            Table::create()
                .table("payment_sandbox_payments")
                .if_not_exists()
                .col(string_len("id", 64).primary_key())
                .col(string_len("idempotency_key", 128).unique_key())
                .col(uuid("checkout_id"))
                .col(big_integer("amount_minor"))
                .col(string_len("currency", 3))
                .col(string_len("status", 16))
                .col(string_len("reason", 100))
                .col(timestamp_with_time_zone("created_at"))
                .to_owned(),
        )
        .await
    }
}

/// Refunds of paid checkouts to the card.
struct M0005Refunds;

skillup_kit::migration_name!(M0005Refunds, "m0005_refunds");

#[async_trait::async_trait]
impl MigrationTrait for M0005Refunds {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table("payment_refunds")
                .if_not_exists()
                .col(uuid("id").primary_key())
                .col(uuid("checkout_id"))
                .col(uuid("user_id"))
                .col(string_len("provider", 16))
                .col(string_len_null("provider_refund_id", 128))
                .col(string_len("status", 16))
                .col(big_integer("amount_minor"))
                .col(string_len("currency", 3))
                .col(string_len("reason", 500))
                .col(string_len("failure_reason", 500))
                .col(string_len("idempotency_key", 128))
                .col(string_len("request_hash", 64))
                .col(uuid("transaction_id"))
                .col(timestamp_with_time_zone("created_at"))
                .col(timestamp_with_time_zone("updated_at"))
                .col(timestamp_with_time_zone("next_check_at"))
                .to_owned(),
        )
        .await?;
        for (name, cols, unique) in [
            ("payment_refunds_key", ["checkout_id", "idempotency_key"], true),
            ("payment_refunds_provider_refund", ["provider", "provider_refund_id"], true),
            ("payment_refunds_due", ["status", "next_check_at"], false),
        ] {
            let mut index = Index::create();
            index.name(name).table("payment_refunds");
            if unique {
                index.unique();
            }
            for c in cols {
                index.col(c);
            }
            m.create_index(index.to_owned()).await?;
        }
        Ok(())
    }
}
