//! What the subscribe service holds about one person, for their data export:
//! `subscription.json` (the plan and period as they see it now, and the stored subscription
//! with its status and dates) and `usage.json` (settled usage of every period kept, by
//! function, and the current period day by day, in UTC).

use serde::Serialize;
use skillup_kit::export::Sink;
use uuid::Uuid;

use crate::{
    domain::{Subscription, SubscriptionStatus},
    error::{Result, SubscribeError},
    history::MAX_PERIODS,
    subscriptions::Subscriptions,
};

/// The subscription as stored: what a paid plan went through (free users have none).
#[derive(Serialize)]
struct Record {
    id: Uuid,
    plan_id: String,
    status: SubscriptionStatus,
    period_start: chrono::DateTime<chrono::Utc>,
    period_end: chrono::DateTime<chrono::Utc>,
    cancel_at_period_end: bool,
    updated_at: chrono::DateTime<chrono::Utc>,
}

#[derive(Serialize)]
struct SubscriptionFile {
    current: Subscription,
    record: Option<Record>,
}

impl Subscriptions {
    /// Writes the user's subscription and usage into `sink`.
    pub async fn export_user(&self, user: Uuid, sink: &Sink) -> Result<()> {
        let record = self.subscription_row(user).await?.map(|r| Record {
            id: r.id,
            plan_id: r.plan_id,
            status: r.status,
            period_start: r.period_start,
            period_end: r.period_end,
            cancel_at_period_end: r.cancel_at_period_end,
            updated_at: r.updated_at,
        });
        let file = SubscriptionFile { current: self.subscription(user).await?, record };
        sink.json("subscription.json", &file).await.map_err(abandoned)?;
        let usage = self.usage_history(user, "UTC", MAX_PERIODS).await?;
        sink.json("usage.json", &usage).await.map_err(abandoned)
    }
}

fn abandoned(e: skillup_kit::export::ExportError) -> SubscribeError {
    SubscribeError::Unavailable(e.to_string())
}
