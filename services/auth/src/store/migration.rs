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
        M0004EmailChange
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
