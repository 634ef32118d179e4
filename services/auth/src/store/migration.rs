//! Auth's migrations, with their own history table so services sharing one database under
//! `skillup up` never see each other's.

use sea_orm_migration::{prelude::*, schema::*};

skillup_kit::migrator!(
    Migrator,
    "auth_migrations",
    [
        M0001Init,
        skillup_kit::outbox::Migration::new("m0002_outbox", super::OUTBOX),
        M0003Profile,
        M0004EmailChange,
        M0005DataExports,
        M0006ApiKeys,
        M0007AuditLog,
        M0008RevokedSessions
    ]
);

struct M0001Init;

skillup_kit::migration_name!(M0001Init, "m0001_init");

#[async_trait::async_trait]
impl MigrationTrait for M0001Init {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table("auth_users")
                .if_not_exists()
                .col(uuid("id").primary_key())
                .col(string_len("email", 254).unique_key())
                .col(string_len("name", 100))
                .col(string_len("password_hash", 100))
                .col(boolean("email_verified"))
                .col(string_len("tier", 32))
                .col(string_len("scopes", 512))
                .col(boolean("is_active"))
                .col(timestamp_with_time_zone("created_at"))
                .col(timestamp_with_time_zone("updated_at"))
                .to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table("auth_sessions")
                .if_not_exists()
                .col(uuid("id").primary_key())
                .col(uuid("user_id"))
                .col(string_len("user_agent", 512))
                .col(string_len("ip", 64))
                .col(timestamp_with_time_zone("created_at"))
                .col(timestamp_with_time_zone("last_used_at"))
                .col(timestamp_with_time_zone("expires_at"))
                .col(timestamp_with_time_zone_null("revoked_at"))
                .foreign_key(
                    ForeignKey::create()
                        .from("auth_sessions", "user_id")
                        .to("auth_users", "id")
                        .on_delete(ForeignKeyAction::Cascade),
                )
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("auth_sessions_user")
                .table("auth_sessions")
                .col("user_id")
                .to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table("auth_refresh_tokens")
                .if_not_exists()
                .col(uuid("id").primary_key())
                .col(uuid("session_id"))
                .col(uuid("user_id"))
                .col(string_len("token_hash", 64).unique_key())
                .col(timestamp_with_time_zone("created_at"))
                .col(timestamp_with_time_zone("expires_at"))
                .col(timestamp_with_time_zone_null("used_at"))
                .foreign_key(
                    ForeignKey::create()
                        .from("auth_refresh_tokens", "session_id")
                        .to("auth_sessions", "id")
                        .on_delete(ForeignKeyAction::Cascade),
                )
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("auth_refresh_tokens_session")
                .table("auth_refresh_tokens")
                .col("session_id")
                .to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table("auth_email_tokens")
                .if_not_exists()
                .col(uuid("id").primary_key())
                .col(uuid("user_id"))
                .col(string_len("kind", 16))
                .col(string_len("token_hash", 64).unique_key())
                .col(timestamp_with_time_zone("created_at"))
                .col(timestamp_with_time_zone("expires_at"))
                .col(timestamp_with_time_zone_null("used_at"))
                .foreign_key(
                    ForeignKey::create()
                        .from("auth_email_tokens", "user_id")
                        .to("auth_users", "id")
                        .on_delete(ForeignKeyAction::Cascade),
                )
                .to_owned(),
        )
        .await?;
        Ok(())
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        for t in ["auth_email_tokens", "auth_refresh_tokens", "auth_sessions", "auth_users"] {
            m.drop_table(Table::drop().table(t).if_exists().to_owned()).await?;
        }
        Ok(())
    }
}

/// The profile's language and time zone. Accounts made before it read English and UTC.
struct M0003Profile;

skillup_kit::migration_name!(M0003Profile, "m0003_profile");

#[async_trait::async_trait]
impl MigrationTrait for M0003Profile {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        // One column per statement: SQLite adds them one at a time.
        for column in [
            string_len("locale", 8).default("en").to_owned(),
            string_len("time_zone", 64).default("UTC").to_owned(),
        ] {
            let mut column = column;
            m.alter_table(Table::alter().table("auth_users").add_column(&mut column).to_owned())
                .await?;
        }
        Ok(())
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        for column in ["locale", "time_zone"] {
            m.alter_table(Table::alter().table("auth_users").drop_column(column).to_owned())
                .await?;
        }
        Ok(())
    }
}

/// An emailed token of a change of address carries the address it confirms.
struct M0004EmailChange;

skillup_kit::migration_name!(M0004EmailChange, "m0004_email_change");

#[async_trait::async_trait]
impl MigrationTrait for M0004EmailChange {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        let mut column = string_len_null("new_email", 254);
        m.alter_table(Table::alter().table("auth_email_tokens").add_column(&mut column).to_owned())
            .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.alter_table(Table::alter().table("auth_email_tokens").drop_column("new_email").to_owned())
            .await
    }
}

/// People's copies of their data: one row per export, its archive in chunks.
struct M0005DataExports;

skillup_kit::migration_name!(M0005DataExports, "m0005_data_exports");

#[async_trait::async_trait]
impl MigrationTrait for M0005DataExports {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table("auth_data_exports")
                .if_not_exists()
                .col(uuid("id").primary_key())
                .col(uuid("user_id"))
                .col(string_len("status", 16))
                .col(timestamp_with_time_zone("created_at"))
                .col(timestamp_with_time_zone("updated_at"))
                .col(timestamp_with_time_zone("lease_until"))
                .col(integer("attempts"))
                .col(timestamp_with_time_zone_null("ready_at"))
                .col(timestamp_with_time_zone_null("expires_at"))
                .col(big_integer("size_bytes"))
                .col(string_len("error", 512))
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("auth_data_exports_user")
                .table("auth_data_exports")
                .col("user_id")
                .to_owned(),
        )
        .await?;
        // One export being prepared per person: asking twice is one operation (a partial
        // unique index, the same statement on PostgreSQL and SQLite).
        m.get_connection()
            .execute_unprepared(
                "CREATE UNIQUE INDEX IF NOT EXISTS auth_data_exports_preparing \
                 ON auth_data_exports (user_id) WHERE status = 'preparing'",
            )
            .await?;
        m.create_table(
            Table::create()
                .table("auth_data_export_chunks")
                .if_not_exists()
                .col(uuid("export_id"))
                .col(integer("seq"))
                .col(binary("data"))
                .primary_key(Index::create().col("export_id").col("seq"))
                .to_owned(),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        for t in ["auth_data_export_chunks", "auth_data_exports"] {
            m.drop_table(Table::drop().table(t).if_exists().to_owned()).await?;
        }
        Ok(())
    }
}

/// API keys: one row per key, found by the hash of the secret.
struct M0006ApiKeys;

skillup_kit::migration_name!(M0006ApiKeys, "m0006_api_keys");

#[async_trait::async_trait]
impl MigrationTrait for M0006ApiKeys {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table("auth_api_keys")
                .if_not_exists()
                .col(uuid("id").primary_key())
                .col(uuid("user_id"))
                .col(string_len("name", 400))
                .col(string_len("prefix", 32))
                .col(string_len("secret_hash", 64).unique_key())
                .col(timestamp_with_time_zone("created_at"))
                .col(timestamp_with_time_zone_null("last_used_at"))
                .col(timestamp_with_time_zone_null("expires_at"))
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("auth_api_keys_user")
                .table("auth_api_keys")
                .col("user_id")
                .if_not_exists()
                .to_owned(),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.drop_table(Table::drop().table("auth_api_keys").if_exists().to_owned()).await
    }
}

/// The audit log: every service's admin actions, append-only (triggers refuse UPDATE and
/// DELETE on PostgreSQL and SQLite alike, so no code path — ours or a mistaken one — can
/// change an entry; only a superuser dropping the triggers could).
struct M0007AuditLog;

skillup_kit::migration_name!(M0007AuditLog, "m0007_audit_log");

#[async_trait::async_trait]
impl MigrationTrait for M0007AuditLog {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table("auth_audit_log")
                .if_not_exists()
                .col(uuid("id").primary_key())
                .col(timestamp_with_time_zone("occurred_at"))
                .col(uuid_null("actor_id"))
                .col(string_len("actor", 254))
                .col(string_len("action", 64))
                .col(string_len("target_type", 32))
                .col(string_len("target_id", 128))
                .col(text("before"))
                .col(text("after"))
                .col(string_len("reason", 2000))
                .col(string_len("request_id", 128))
                .col(string_len("client_ip", 64))
                .col(string_len("component", 32))
                .to_owned(),
        )
        .await?;
        for (name, col) in [
            ("auth_audit_log_actor", "actor_id"),
            ("auth_audit_log_target", "target_id"),
            ("auth_audit_log_action", "action"),
        ] {
            m.create_index(
                Index::create()
                    .name(name)
                    .table("auth_audit_log")
                    .col(col)
                    .if_not_exists()
                    .to_owned(),
            )
            .await?;
        }
        let db = m.get_connection();
        match db.get_database_backend() {
            sea_orm::DbBackend::Postgres => {
                db.execute_unprepared(
                    "CREATE OR REPLACE FUNCTION auth_audit_log_append_only() RETURNS trigger \
                     LANGUAGE plpgsql AS $$ BEGIN \
                     RAISE EXCEPTION 'the audit log is append-only'; END $$",
                )
                .await?;
                db.execute_unprepared(
                    "CREATE TRIGGER auth_audit_log_append_only BEFORE UPDATE OR DELETE \
                     ON auth_audit_log FOR EACH ROW EXECUTE FUNCTION auth_audit_log_append_only()",
                )
                .await?;
                db.execute_unprepared(
                    "CREATE TRIGGER auth_audit_log_no_truncate BEFORE TRUNCATE \
                     ON auth_audit_log FOR EACH STATEMENT EXECUTE FUNCTION auth_audit_log_append_only()",
                )
                .await?;
            }
            _ => {
                for (name, op) in [("no_update", "UPDATE"), ("no_delete", "DELETE")] {
                    db.execute_unprepared(&format!(
                        "CREATE TRIGGER IF NOT EXISTS auth_audit_log_{name} BEFORE {op} \
                         ON auth_audit_log BEGIN \
                         SELECT RAISE(ABORT, 'the audit log is append-only'); END"
                    ))
                    .await?;
                }
            }
        }
        Ok(())
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.drop_table(Table::drop().table("auth_audit_log").if_exists().to_owned()).await
    }
}

/// Sessions by revocation time, for the rebuild after a cache lost its data (`recovery`: the
/// sessions revoked within the markers' life). Partial — only revoked sessions are in it — so
/// it stays small and costs signing in nothing; the same statement on PostgreSQL and SQLite.
struct M0008RevokedSessions;

skillup_kit::migration_name!(M0008RevokedSessions, "m0008_revoked_sessions");

#[async_trait::async_trait]
impl MigrationTrait for M0008RevokedSessions {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.get_connection()
            .execute_unprepared(
                "CREATE INDEX IF NOT EXISTS auth_sessions_revoked ON auth_sessions (revoked_at) \
                 WHERE revoked_at IS NOT NULL",
            )
            .await
            .map(drop)
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.drop_index(Index::drop().name("auth_sessions_revoked").if_exists().to_owned()).await
    }
}
