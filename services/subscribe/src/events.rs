//! The event the subscribe service publishes, as the contract's message:
//! `subscription.changed`, stored in the outbox in the transaction of the change it reports.

use chrono::{DateTime, Utc};
use sea_orm::{ConnectionTrait, DbErr};
use skillup_kit::{db::timestamp, outbox::Outbox};
use skillup_proto::subscribe::v1 as pb;
use uuid::Uuid;

use crate::domain::SubscriptionStatus;

/// A stored status as the contract names it.
pub(crate) fn status_pb(s: SubscriptionStatus) -> pb::SubscriptionStatus {
    match s {
        SubscriptionStatus::Active => pb::SubscriptionStatus::Active,
        SubscriptionStatus::Canceled => pb::SubscriptionStatus::Canceled,
        SubscriptionStatus::Expired => pb::SubscriptionStatus::Expired,
    }
}

/// `subscription.changed` into `txn`.
pub(crate) async fn changed<C: ConnectionTrait>(
    outbox: &Outbox,
    txn: &C,
    user: Uuid,
    plan: &str,
    status: SubscriptionStatus,
    end: DateTime<Utc>,
) -> Result<(), DbErr> {
    let msg = pb::SubscriptionChanged {
        user_id: user.to_string(),
        plan: plan.to_owned(),
        status: status_pb(status) as i32,
        current_period_end: Some(timestamp(end)),
    };
    let id = Uuid::now_v7().to_string();
    outbox.add(txn, &id, &user.to_string(), &msg).await
}

/// The audit entry of an operator's change to a plan (its row before and after).
pub(crate) fn plan_audit(
    actor: &skillup_kit::audit::Actor,
    action: &str,
    before: Option<&crate::store::entities::plan::Model>,
    after: &crate::store::entities::plan::Model,
    why: &str,
) -> skillup_proto::common::v1::AuditEntry {
    actor.entry("subscribe", action, ("plan", &after.id), before, Some(after), why)
}
