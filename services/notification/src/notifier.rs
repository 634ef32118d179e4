//! The notification service's state, and what its parts share: a stored notification as the
//! API shows it, and reading a user's notifications by sequence.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use sea_orm::{ColumnTrait, DatabaseConnection, EntityTrait, QueryFilter, QueryOrder, QuerySelect};
use skillup_kit::{bus::SharedBus, mailer::SharedMailer};

pub use crate::domain::{Notification, NotificationKind};
use tokio::sync::broadcast;
use uuid::Uuid;

use crate::{error::Result, store::item};

/// The fan-out id: the notification id and its sequence number (`{id}/{seq}`), so replicas
/// order it without another read.
pub(crate) fn fanout_id(n: &item::Model) -> String {
    format!("{}/{}", n.id, n.seq)
}

#[derive(Clone)]
pub struct Notifier {
    pub(crate) db: DatabaseConnection,
    pub(crate) bus: SharedBus,
    pub(crate) mailer: SharedMailer,
    /// Base of the link in emails.
    pub(crate) public_url: String,
    /// Live subscribers of this replica, by user.
    pub(crate) live: Arc<Mutex<HashMap<Uuid, broadcast::Sender<Live>>>>,
}

pub(crate) fn clip(s: &str, n: usize) -> String {
    s.chars().take(n).collect()
}

impl Notifier {
    pub fn new(
        db: DatabaseConnection,
        bus: SharedBus,
        mailer: SharedMailer,
        public_url: impl Into<String>,
    ) -> Self {
        Self { db, bus, mailer, public_url: public_url.into(), live: Default::default() }
    }

    /// The user's newest sequence number (0 before the first notification).
    pub(crate) async fn newest_seq(&self, user: Uuid) -> Result<i64> {
        Ok(item::Entity::find()
            .select_only()
            .column_as(item::Column::Seq.max(), "max")
            .filter(item::Column::UserId.eq(user))
            .into_tuple::<Option<i64>>()
            .one(&self.db)
            .await?
            .flatten()
            .unwrap_or(0))
    }

    /// Stored notifications with sequence numbers in `(after, upto]`, in order.
    pub(crate) async fn after(
        &self,
        user: Uuid,
        after: i64,
        upto: Option<i64>,
    ) -> Result<Vec<item::Model>> {
        let mut q = item::Entity::find()
            .filter(item::Column::UserId.eq(user))
            .filter(item::Column::Seq.gt(after));
        if let Some(u) = upto {
            q = q.filter(item::Column::Seq.lte(u));
        }
        Ok(q.order_by_asc(item::Column::Seq).limit(MAX_BACKLOG).all(&self.db).await?)
    }
}

/// The notifications the digest emails.
pub(crate) const DIGESTED: [NotificationKind; 2] =
    [NotificationKind::GenerationCompleted, NotificationKind::GenerationFailed];

/// A notification with its sequence number, as live subscribers get it.
#[derive(Clone, Debug)]
pub(crate) struct Live {
    pub(crate) seq: i64,
    pub(crate) notification: Notification,
}

/// Most notifications a reconnecting client is sent from the backlog.
pub(crate) const MAX_BACKLOG: u64 = 500;
