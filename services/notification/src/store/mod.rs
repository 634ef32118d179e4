//! The notification service's tables: each user's notifications (one per bus event, unique by
//! the event id) and their delivery preferences.

pub mod notifications;
pub mod push;

pub use notifications::NotificationStore;

use sea_orm_migration::{prelude::*, schema::*};

skillup_kit::migrator!(
    Migrator,
    "notification_migrations",
    [
        M0001Init,
        M0002Contacts,
        M0003KindNames,
        M0004ContactLocale,
        M0005Sequences,
        M0006PushSubscriptions,
        M0007EventChoices
    ]
);

struct M0001Init;

skillup_kit::migration_name!(M0001Init, "m0001_init");

#[async_trait::async_trait]
impl MigrationTrait for M0001Init {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table("notification_items")
                .if_not_exists()
                .col(uuid("id").primary_key())
                .col(uuid("user_id"))
                .col(big_integer("seq"))
                .col(integer("kind"))
                .col(string_len("title", 200))
                .col(text("body"))
                .col(text("data"))
                .col(string_len("event_id", 200).unique_key())
                .col(timestamp_with_time_zone("created_at"))
                .col(timestamp_with_time_zone_null("read_at"))
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("notification_items_user_seq")
                .table("notification_items")
                .col("user_id")
                .col("seq")
                .unique()
                .if_not_exists()
                .to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table("notification_prefs")
                .if_not_exists()
                .col(uuid("user_id").primary_key())
                .col(boolean("email_on_generation"))
                .col(boolean("email_on_payment"))
                .col(string_len("locale", 16))
                .to_owned(),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.drop_table(Table::drop().table("notification_items").to_owned()).await?;
        m.drop_table(Table::drop().table("notification_prefs").to_owned()).await
    }
}

struct M0002Contacts;

skillup_kit::migration_name!(M0002Contacts, "m0002_contacts");

#[async_trait::async_trait]
impl MigrationTrait for M0002Contacts {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table("notification_contacts")
                .if_not_exists()
                .col(uuid("user_id").primary_key())
                .col(string_len("email", 320))
                .col(big_integer("emailed_seq"))
                .col(boolean("mail_pending"))
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("notification_contacts_pending")
                .table("notification_contacts")
                .col("mail_pending")
                .if_not_exists()
                .to_owned(),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.drop_table(Table::drop().table("notification_contacts").to_owned()).await
    }
}

/// Where a user's emails go (learnt from `user.registered`) and how far their generation
/// notifications have been emailed.
/// Notification kinds stored as names (`generation_completed`, …) instead of the protobuf
/// enum's numbers.
struct M0003KindNames;

skillup_kit::migration_name!(M0003KindNames, "m0003_kind_names");

#[async_trait::async_trait]
impl MigrationTrait for M0003KindNames {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        let m = m.begin().await?;
        let kinds = [
            (1, "generation_completed"),
            (2, "generation_failed"),
            (3, "payment_succeeded"),
            (4, "payment_failed"),
            (5, "subscription_changed"),
        ];
        skillup_kit::db::enum_numbers_to_names(
            &m,
            "notification_items",
            "kind",
            &kinds,
            "subscription_changed",
        )
        .await?;
        m.commit().await
    }
}

/// The language a contact reads its emails in (from the account's profile).
struct M0004ContactLocale;

skillup_kit::migration_name!(M0004ContactLocale, "m0004_contact_locale");

#[async_trait::async_trait]
impl MigrationTrait for M0004ContactLocale {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        let mut column = string_len("locale", 8).default("en").to_owned();
        m.alter_table(
            Table::alter().table("notification_contacts").add_column(&mut column).to_owned(),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.alter_table(
            Table::alter().table("notification_contacts").drop_column("locale").to_owned(),
        )
        .await
    }
}

/// Each user's last notification sequence number, taken by an upsert in the transaction that
/// stores the notification: a burst for one user waits on the row's lock instead of racing for
/// the newest number and retrying. Filled from the notifications stored before.
struct M0005Sequences;

skillup_kit::migration_name!(M0005Sequences, "m0005_sequences");

#[async_trait::async_trait]
impl MigrationTrait for M0005Sequences {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table("notification_sequences")
                .if_not_exists()
                .col(uuid("user_id").primary_key())
                .col(big_integer("last"))
                .to_owned(),
        )
        .await?;
        let existing = Query::select()
            .column("user_id")
            .expr(Expr::col("seq").max())
            .from("notification_items")
            .group_by_col("user_id")
            .to_owned();
        let fill = Query::insert()
            .into_table("notification_sequences")
            .columns(["user_id", "last"])
            .select_from(existing)
            .map_err(|e| DbErr::Migration(e.to_string()))?
            .to_owned();
        m.get_connection().execute(&fill).await.map(drop)
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.drop_table(Table::drop().table("notification_sequences").to_owned()).await
    }
}

/// The browsers that receive each user's notifications by Web Push: one row per push endpoint
/// (unique: the same browser subscribing again, or for another account, replaces its row).
struct M0006PushSubscriptions;

skillup_kit::migration_name!(M0006PushSubscriptions, "m0006_push_subscriptions");

#[async_trait::async_trait]
impl MigrationTrait for M0006PushSubscriptions {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table("notification_push_subscriptions")
                .if_not_exists()
                .col(uuid("id").primary_key())
                .col(uuid("user_id"))
                .col(string_len("endpoint", 2_048).unique_key())
                .col(string_len("p256dh", 128))
                .col(string_len("auth", 64))
                .col(timestamp_with_time_zone("created_at"))
                .col(timestamp_with_time_zone_null("expires_at"))
                .col(timestamp_with_time_zone_null("last_delivered_at"))
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("notification_push_subscriptions_user")
                .table("notification_push_subscriptions")
                .col("user_id")
                .if_not_exists()
                .to_owned(),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.drop_table(Table::drop().table("notification_push_subscriptions").to_owned()).await
    }
}

/// Per-event delivery choices (`notification_prefs.events`, JSON of the choices made), each
/// notification's email state (`notification_items.mail_state`: 0 not emailed yet, 1 emailed
/// — claimed by the conditional update that flips it, so an email goes once whoever sends it),
/// and the secret of each person's unsubscribe links (`notification_contacts.unsubscribe_key`).
struct M0007EventChoices;

skillup_kit::migration_name!(M0007EventChoices, "m0007_event_choices");

#[async_trait::async_trait]
impl MigrationTrait for M0007EventChoices {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        let mut events = text_null("events");
        m.alter_table(
            Table::alter().table("notification_prefs").add_column(&mut events).to_owned(),
        )
        .await?;
        let mut state = small_integer("mail_state").default(0).to_owned();
        m.alter_table(Table::alter().table("notification_items").add_column(&mut state).to_owned())
            .await?;
        let mut key = string_len_null("unsubscribe_key", 64);
        m.alter_table(Table::alter().table("notification_contacts").add_column(&mut key).to_owned())
            .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.alter_table(Table::alter().table("notification_prefs").drop_column("events").to_owned())
            .await?;
        m.alter_table(
            Table::alter().table("notification_items").drop_column("mail_state").to_owned(),
        )
        .await?;
        m.alter_table(
            Table::alter().table("notification_contacts").drop_column("unsubscribe_key").to_owned(),
        )
        .await
    }
}

/// A browser's push subscription.
pub mod push_subscription {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "notification_push_subscriptions")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: Uuid,
        pub user_id: Uuid,
        /// The push service's URL for the browser (checked: see `push::endpoint`).
        pub endpoint: String,
        /// The browser's P-256 public key, base64url.
        pub p256dh: String,
        /// The browser's authentication secret, base64url.
        pub auth: String,
        pub created_at: DateTimeUtc,
        /// When the browser said it lapses.
        pub expires_at: Option<DateTimeUtc>,
        pub last_delivered_at: Option<DateTimeUtc>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// A user's last notification sequence number.
pub mod sequence {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "notification_sequences")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub user_id: Uuid,
        pub last: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod contact {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "notification_contacts")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub user_id: Uuid,
        pub email: String,
        /// The last notification sequence number an email covered.
        pub emailed_seq: i64,
        /// Generation notifications wait for the next digest.
        pub mail_pending: bool,
        /// `en` or `ru`: the account's language.
        pub locale: String,
        /// The secret in the person's unsubscribe links (made with the first email).
        pub unsubscribe_key: Option<String>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// One notification.
pub mod item {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "notification_items")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: Uuid,
        pub user_id: Uuid,
        /// 1, 2, 3, … per user with no gaps (unique with the user): the order of delivery and
        /// recovery, whichever replica stored it.
        pub seq: i64,
        /// What it is about, by name.
        pub kind: crate::domain::NotificationKind,
        pub title: String,
        pub body: String,
        /// JSON object of related ids.
        pub data: String,
        /// The bus event it came from; unique, so a redelivered event never notifies twice.
        pub event_id: String,
        pub created_at: DateTimeUtc,
        pub read_at: Option<DateTimeUtc>,
        /// 0: not emailed; 1: emailed (or taken by the email being sent).
        pub mail_state: i16,
    }

    impl From<&Model> for crate::domain::Notification {
        fn from(n: &Model) -> Self {
            crate::domain::Notification {
                id: n.id,
                kind: n.kind,
                title: n.title.clone(),
                body: n.body.clone(),
                data: serde_json::from_str(&n.data).unwrap_or_default(),
                created_at: n.created_at,
                read_at: n.read_at,
            }
        }
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// A user's delivery preferences (absent = the defaults).
pub mod prefs {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "notification_prefs")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub user_id: Uuid,
        pub email_on_generation: bool,
        pub email_on_payment: bool,
        pub locale: String,
        /// JSON: `{"<event>": {"email": "immediate|digest|off", "push": "immediate|off"}}`.
        pub events: Option<String>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}
