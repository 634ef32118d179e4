//! Plan changes: subscribe (charged once per user, plan and period, switches prorated), cancel
//! at period end, renewal and expiry to free — each change one at a time per user, its event
//! in the outbox of the same transaction.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sea_orm::{ConnectionTrait, DbErr, TransactionTrait};
use skillup_kit::{
    db::{is_busy as busy, is_unique_violation as unique_violation},
    outbox::Outbox,
};
use uuid::Uuid;

use crate::domain::{Subscription, SubscriptionStatus as Status};
use crate::subscriptions::*;
use crate::{
    error::{Result, SubscribeError},
    store::entities::{plan, subscription},
};

/// How long a plan change may keep its claim before another change may take over (the claim of
/// a process that died mid-change); far longer than a charge may take.
pub(crate) const CHANGE_CLAIM: chrono::Duration = chrono::Duration::seconds(60);

impl Subscriptions {
    /// Subscribes to (or switches to) `plan_id`. Every change is charged once, under its own
    /// key (the client's idempotency key, or the change's id), and only one change per user
    /// runs at a time, so concurrent subscribes cannot both pay. A switch between paid plans
    /// credits the unused part of the current one and keeps the period's usage (it never starts
    /// the quota again from zero).
    pub async fn subscribe(&self, user: Uuid, plan_id: &str, key: &str) -> Result<Subscription> {
        if plan_id.is_empty() {
            return Err(SubscribeError::Invalid("plan", skillup_kit::invalid::required("plan")));
        }
        let plan = self.plan(plan_id).await?;
        if plan.archived {
            return Err(SubscribeError::NotFound(crate::texts::text("plan-archived", None)));
        }
        if !crate::selling::on_sale(&plan, &self.selling) {
            let args = skillup_kit::fluent_args![("currency", self.selling.clone())];
            return Err(SubscribeError::NotFound(crate::texts::text(
                "plan-other-currency",
                Some(&args),
            )));
        }
        if plan.id == FREE {
            return Err(SubscribeError::Invalid(
                "plan",
                crate::texts::text("free-is-everyones", None),
            ));
        }
        if let Some(s) = self
            .current(user)
            .await?
            .sub
            .filter(|s| s.status == Status::Active && s.plan_id == plan.id)
        {
            return self.keep(user, &s).await;
        }
        let change = self.claim_change(user).await?;
        let res = self.change_plan(user, &plan, key, change).await;
        if res.is_err() {
            // A change that went through took its claim away in its own transaction.
            self.release_change(user, change).await;
        }
        res
    }

    /// Subscribing again to the plan one has: a cancellation is taken back, nothing charged.
    pub(crate) async fn keep(&self, user: Uuid, s: &subscription::Model) -> Result<Subscription> {
        if s.cancel_at_period_end {
            self.subs.set_cancel_at_period_end(&self.db, s.id, false).await?;
            self.forget(user).await;
        }
        self.subscription(user).await
    }

    /// Claims the user's one plan change in progress. A claim older than [`CHANGE_CLAIM`] was
    /// left by a process that died mid-change and is taken over.
    pub(crate) async fn claim_change(&self, user: Uuid) -> Result<Uuid> {
        let id = Uuid::now_v7();
        for attempt in 0..20u64 {
            let now = Utc::now();
            match self.subs.claim_change(user, id, now).await {
                Ok(()) => return Ok(id),
                Err(e) if unique_violation(&e) => {
                    let stale = self.subs.drop_stale_change(user, now - CHANGE_CLAIM).await?;
                    if stale == 0 {
                        return Err(SubscribeError::Conflict(
                            "another plan change for this account is in progress; retry in a moment"
                                .into(),
                        ));
                    }
                }
                Err(e) if busy(&e) => {
                    tokio::time::sleep(Duration::from_millis(2 + attempt * 5)).await;
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(SubscribeError::Unavailable("plan changes stayed busy".into()))
    }

    pub(crate) async fn release_change(&self, user: Uuid, change: Uuid) {
        if let Err(e) = self.subs.end_change(&self.db, user, change).await {
            tracing::warn!(error = %e, %user, "plan change claim not released; it lapses on its own");
        }
    }

    /// The change itself, under its claim: the state read from the table, the charge, then the
    /// row, its event and the end of the claim in one transaction.
    pub(crate) async fn change_plan(
        &self,
        user: Uuid,
        plan: &plan::Model,
        key: &str,
        change: Uuid,
    ) -> Result<Subscription> {
        let row = self.subs.of_user(user).await?;
        let cur = self.current_of(user, row).await?;
        let now = Utc::now();
        let active = cur.sub.clone().filter(|s| s.status == Status::Active);
        if let Some(s) = active.as_ref().filter(|s| s.plan_id == plan.id) {
            // A concurrent change to the same plan (or a retry) got here first.
            self.release_change(user, change).await;
            return self.keep(user, s).await;
        }
        let credit = match &active {
            // (A period bought in another currency before the deployment changed its selling
            // currency is not credited: money is never converted.)
            Some(s) if cur.plan.price_minor > 0 && cur.plan.currency == plan.currency => {
                let total = Ord::max(i64::from(cur.plan.period_days), 1) * 86_400;
                let left = (s.period_end - now).num_seconds().clamp(0, total);
                cur.plan.price_minor * left / total
            }
            _ => 0,
        };
        let price = Ord::max(plan.price_minor - credit, 0);
        // The client's key binds to this change from this state: a retry replays its charge,
        // another plan under it is refused (the amount differs), and the same key once the
        // subscription moved on is another change, charged anew.
        let charge_key = if key.is_empty() {
            format!("subscribe:{change}")
        } else {
            let from = active.as_ref().map_or_else(
                || "free".to_owned(),
                |s| format!("{}@{}", s.plan_id, s.period_end.timestamp_micros()),
            );
            use sha2::Digest as _;
            let mut h = sha2::Sha256::new();
            for part in [user.to_string().as_bytes(), key.as_bytes(), from.as_bytes()] {
                h.update((part.len() as u64).to_be_bytes());
                h.update(part);
            }
            let hex: String = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
            format!("subscribe:{hex}")
        };
        if price > 0 {
            self.billing
                .charge(
                    user,
                    price,
                    &plan.currency,
                    &charge_key,
                    &format!("subscription:{}:{}", plan.id, now.format("%Y-%m")),
                )
                .await?;
        }
        // Between paid plans the period keeps its start: its usage row (keyed by the start)
        // carries over, holds in flight included.
        let start = active.as_ref().map_or(now, |s| s.period_start);
        let end = now + chrono::Duration::days(i64::from(plan.period_days));
        let txn = self.db.begin().await?;
        let ours = self.subs.end_change(&txn, user, change).await?;
        if !ours {
            txn.rollback().await?;
            tracing::error!(%user, %change, price, "a plan change outlived its claim after charging");
            return Err(SubscribeError::Unavailable("the plan change was superseded".into()));
        }
        // One row per user: a first subscribe inserts it, later ones update it.
        self.subs.activate(&txn, user, plan, start, end).await?;
        self.changed(&txn, user, &plan.id, Status::Active, end).await?;
        txn.commit().await?;
        self.committed(user).await;
        self.subscription(user).await
    }

    /// Cancels at the end of the current period.
    pub async fn cancel(&self, user: Uuid) -> Result<Subscription> {
        let cur = self.current(user).await?;
        let Some(s) = cur.sub.filter(|s| s.status == Status::Active) else {
            return Err(SubscribeError::NotFound(crate::texts::text("nothing-to-cancel", None)));
        };
        let txn = self.db.begin().await?;
        self.subs.set_cancel_at_period_end(&txn, s.id, true).await?;
        self.changed(&txn, user, &s.plan_id, Status::Canceled, s.period_end).await?;
        txn.commit().await?;
        self.committed(user).await;
        self.subscription(user).await
    }

    /// Renews one subscription whose period ended: charges the next period once (the key is
    /// the user, plan and the period's start), advances it with a conditional update, or
    /// expires it to free when it was cancelled or cannot be paid. Safe on many replicas.
    pub(crate) async fn renew(&self, s: subscription::Model) -> Result<()> {
        use Status::{Active, Expired};
        // The plan's terms now: an edit reaches its subscribers here, at their renewal.
        let plan = self.plan(&s.plan_id).await?;
        // A plan no longer sold (archived, or priced in another currency than the selling
        // one) is not renewed.
        if s.cancel_at_period_end || !crate::selling::on_sale(&plan, &self.selling) {
            self.advance_or_expire(&s, Expired, s.period_end, FREE, None).await?;
            return Ok(());
        }
        let next_end = s.period_end + chrono::Duration::days(i64::from(plan.period_days));
        let key = format!("renew:{}:{}:{}", s.user_id, plan.id, s.period_end.timestamp_millis());
        match self
            .billing
            .charge(
                s.user_id,
                plan.price_minor,
                &plan.currency,
                &key,
                &format!("subscription:{}:renewal", plan.id),
            )
            .await
        {
            Ok(()) => {
                self.advance_or_expire(&s, Active, next_end, &plan.id, Some(&plan)).await?;
                Ok(())
            }
            Err(SubscribeError::InsufficientFunds) => {
                if self.advance_or_expire(&s, Expired, s.period_end, FREE, None).await? {
                    tracing::info!(user_id = %s.user_id, plan = %plan.id, "renewal not paid: back to free");
                }
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Moves an ended period on (`Active`, to `end`, on `terms`) or expires it, by a
    /// conditional update that only one replica wins, with its event in the same transaction.
    /// `false`: another replica did it already.
    pub(crate) async fn advance_or_expire(
        &self,
        s: &subscription::Model,
        status: Status,
        end: DateTime<Utc>,
        event_plan: &str,
        terms: Option<&plan::Model>,
    ) -> Result<bool> {
        let txn = self.db.begin().await?;
        if !self.subs.advance(&txn, s, status, end, terms).await? {
            txn.rollback().await?;
            return Ok(false);
        }
        self.changed(&txn, s.user_id, event_plan, status, end).await?;
        txn.commit().await?;
        self.committed(s.user_id).await;
        Ok(true)
    }

    /// The periodic job: renews every subscription whose period ended. Returns how many it
    /// looked at.
    pub async fn renew_due(&self) -> Result<usize> {
        let due = self.subs.due(500).await?;
        let n = due.len();
        for s in due {
            if let Err(e) = self.renew(s).await {
                tracing::warn!(error = %e, "renewal failed; retried on the next run");
            }
        }
        Ok(n)
    }

    /// Stores `subscription.changed` in `txn`, the transaction of the change it reports.
    pub(crate) async fn changed<C: ConnectionTrait>(
        &self,
        txn: &C,
        user: Uuid,
        plan: &str,
        status: Status,
        end: DateTime<Utc>,
    ) -> std::result::Result<(), DbErr> {
        crate::events::changed(&self.outbox, txn, user, plan, status, end).await
    }

    /// After a change's commit: the cached row goes (on every replica: the cache is shared),
    /// and its event goes out.
    pub(crate) async fn committed(&self, user: Uuid) {
        self.forget(user).await;
        self.outbox.wake();
    }

    /// The outbox of this service's events (its relay runs in [`crate::build`]).
    pub fn outbox(&self) -> &Outbox {
        &self.outbox
    }

    /// Test and operator hook: moves a subscription's period end (to exercise renewal).
    pub async fn set_period_end(&self, user: Uuid, end: DateTime<Utc>) -> Result<()> {
        self.subs.set_period_end(user, end).await?;
        self.forget(user).await;
        Ok(())
    }
}
