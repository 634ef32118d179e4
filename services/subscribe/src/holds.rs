//! Quota is **hold → settle**: a reserve takes a hold only through a conditional update
//! (`used + held + asked <= quota`), so no mix of concurrent calls can push use past the limit;
//! commit charges the actual use (never more than the hold), release returns it, and holds
//! never settled expire back.

use std::time::Duration;

use skillup_kit::db::{is_busy as busy, is_unique_violation as unique_violation};
use uuid::Uuid;

use crate::domain::{DenyReason, Entitlement, QuotaHold, SubscriptionStatus as Status, Usage};
use crate::subscriptions::*;
use crate::texts;
use crate::{
    error::{Result, SubscribeError},
    store::{
        entities::hold,
        quota::{Ask, Assumed, Ending, Settled, Taken},
    },
};
use skillup_kit::fluent_args;

/// The subscription a reserve assumes, as the quota statements check it.
pub(crate) fn assumed(cur: &Current) -> Assumed {
    Assumed {
        plan_id: cur.plan.id.clone(),
        paid_plan: cur
            .sub
            .as_ref()
            .filter(|s| s.status == Status::Active)
            .map(|s| s.plan_id.clone()),
        period_start: cur.period_start,
        period_end: cur.period_end,
        token_quota: cur.plan.token_quota,
        generation_quota: cur.plan.generation_quota,
    }
}

/// Longest a hold may live.
pub const MAX_HOLD_SECS: u32 = 86_400;

/// A hold's life when the caller does not say.
pub const DEFAULT_HOLD_SECS: u32 = 3_600;

/// Why a hold goes back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Release {
    /// The platform could not generate it.
    Failed,
    /// Its owner cancelled it.
    Cancelled,
}

/// A wait as whole milliseconds (at most a day's worth are kept; beyond is a day).
fn waited_ms(d: Option<Duration>) -> Option<i64> {
    d.map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX).min(86_400_000))
}

pub(crate) fn hold_uuid(id: &str) -> Result<Uuid> {
    Uuid::parse_str(id)
        .map_err(|_| SubscribeError::Invalid("hold_id", skillup_kit::invalid::uuid("hold_id")))
}

impl Subscriptions {
    /// Whether the plan allows `function` and quota is left.
    pub async fn entitlement(&self, user: Uuid, function: &str) -> Result<Entitlement> {
        let cur = self.current(user).await?;
        let deny = |reason: DenyReason, message: String| Entitlement {
            denied: Some((reason, message)),
            plan: cur.plan.id.clone(),
            priority: Ord::max(cur.plan.priority, 0) as u32,
        };
        if !includes(&cur.plan, function) {
            let args = fluent_args![("function", function), ("plan", cur.plan.title.as_str())];
            return Ok(deny(
                DenyReason::FunctionNotInPlan,
                texts::text("not-in-plan", Some(&args)),
            ));
        }
        let u = self.usage_row(user, cur.period_start).await?;
        let (tu, th, gu, gh) = u.map_or((0, 0, 0, 0), |u| {
            (u.tokens_used, u.tokens_held, u.generations_used, u.generations_held)
        });
        if tu + th >= cur.plan.token_quota || gu + gh >= cur.plan.generation_quota {
            return Ok(deny(DenyReason::QuotaExhausted, texts::text("quota-used-up", None)));
        }
        Ok(Entitlement {
            denied: None,
            plan: cur.plan.id.clone(),
            priority: Ord::max(cur.plan.priority, 0) as u32,
        })
    }

    /// Takes a hold of `tokens` (and one generation) only if the quota left covers it.
    pub async fn reserve(
        &self,
        user: Uuid,
        function: &str,
        tokens: u64,
        key: &str,
        ttl: u32,
    ) -> Result<QuotaHold> {
        if tokens == 0 || tokens > 10_000_000 {
            return Err(SubscribeError::Invalid(
                "tokens",
                skillup_kit::invalid::between("tokens", 1, 10_000_000),
            ));
        }
        if key.len() > 128 {
            return Err(SubscribeError::Invalid(
                "idempotency_key",
                skillup_kit::invalid::at_most_chars("idempotency_key", 128),
            ));
        }
        let ttl = match ttl {
            0 => DEFAULT_HOLD_SECS,
            t if t > MAX_HOLD_SECS => {
                return Err(SubscribeError::Invalid(
                    "ttl_seconds",
                    skillup_kit::invalid::at_most("ttl_seconds", u64::from(MAX_HOLD_SECS)),
                ));
            }
            t => t,
        };
        let (mut cur, known) = self.reserve_view(user).await?;
        if !includes(&cur.plan, function) && known {
            // A known row may predate an upgrade: a refusal is decided on the row of now.
            cur = self.reread(user, false).await?;
        }
        let entitled = |cur: &Current| {
            if includes(&cur.plan, function) {
                Ok(())
            } else {
                let args = fluent_args![("function", function), ("plan", cur.plan.title.as_str())];
                Err(SubscribeError::SubscriptionRequired(texts::text("not-in-plan", Some(&args))))
            }
        };
        entitled(&cur)?;
        let idem = if key.is_empty() {
            format!("{user}:{}", Uuid::now_v7())
        } else {
            format!("{user}:{key}")
        };
        let tokens = tokens as i64;
        let priority = |cur: &Current| Ord::max(cur.plan.priority, 0) as u32;
        let held = |h: hold::Model, usage: Usage, priority: u32| QuotaHold {
            id: h.id,
            tokens: Ord::max(h.tokens, 0) as u64,
            expires_at: h.expires_at,
            usage,
            priority,
        };
        // The hot path is one transaction: a retried key is found by its unique violation (or
        // when the quota looks spent), and lapsed holds are reclaimed only when they stand in
        // the way (the periodic job reclaims the rest).
        let (mut reclaimed, mut rereads) = (false, 0);
        for attempt in 0..50u64 {
            let ask = Ask { function, tokens, idem: &idem, ttl };
            match self.quota.take(user, &assumed(&cur), &ask).await {
                Ok(Taken::Yes(h, row)) => {
                    return Ok(held(*h, usage_of(&cur, Some(&row)), priority(&cur)));
                }
                Ok(Taken::Stale) => {
                    // The subscription changed since this replica saw it (the statement took
                    // nothing): read it again, from the table, since the cache may be what
                    // is behind. Only a subscription changing on every attempt ends here.
                    rereads += 1;
                    if rereads > 3 {
                        return Err(SubscribeError::Unavailable(
                            "the subscription kept changing; retry".into(),
                        ));
                    }
                    cur = self.reread(user, true).await?;
                    entitled(&cur)?;
                }
                Ok(Taken::NoRoom) => {
                    if let Some(found) = self.hold_by_key(&cur, &idem).await? {
                        return Ok(held(found.0, found.1, priority(&cur)));
                    }
                    if !reclaimed {
                        reclaimed = true;
                        if self.expire_due(Some(user)).await? > 0 {
                            continue;
                        }
                    }
                    let row = self.usage_row(user, cur.period_start).await?;
                    let u = usage_of(&cur, row.as_ref());
                    return Err(SubscribeError::QuotaExceeded(format!(
                        "{} of {} tokens and {} of {} generations are used or held",
                        u.tokens_used + u.tokens_held,
                        u.token_quota,
                        u.generations_used + u.generations_held,
                        u.generation_quota
                    )));
                }
                Err(e) if unique_violation(&e) => {
                    if let Some(found) = self.hold_by_key(&cur, &idem).await? {
                        return Ok(held(found.0, found.1, priority(&cur)));
                    }
                }
                Err(e) if busy(&e) => {
                    tokio::time::sleep(Duration::from_millis(2 + Ord::min(attempt * 3, 50))).await
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(SubscribeError::Unavailable("quota store stayed busy".into()))
    }

    /// The hold a reserve key already took, with the usage of its period — only while it is
    /// still held: a key whose hold was settled (committed, released, expired) stands for work
    /// that is over, and taking it again would be a generation nobody pays for.
    pub(crate) async fn hold_by_key(
        &self,
        cur: &Current,
        idem: &str,
    ) -> Result<Option<(hold::Model, Usage)>> {
        let Some(h) = self.quota.hold_by_key(idem).await? else {
            return Ok(None);
        };
        if h.status != "held" {
            return Err(SubscribeError::KeyReused(format!(
                "the hold of this idempotency key was already {}; reserve with a new key",
                h.status
            )));
        }
        let row = self.usage_row(h.user_id, h.period_start).await?;
        Ok(Some((h, usage_of(cur, row.as_ref()))))
    }

    pub(crate) async fn find_hold(&self, id: &str) -> Result<hold::Model> {
        let id = hold_uuid(id)?;
        self.quota.hold(id).await?.ok_or_else(|| SubscribeError::NotFound(format!("no hold {id}")))
    }

    pub(crate) async fn settle_retrying(
        &self,
        id: Uuid,
        to: &str,
        actual: i64,
        ending: Ending,
    ) -> Result<Settled> {
        for attempt in 0..50u64 {
            match self.quota.settle(id, to, actual, ending).await {
                Ok(done) => return Ok(done),
                Err(e) if busy(&e) => {
                    tokio::time::sleep(Duration::from_millis(2 + Ord::min(attempt * 3, 50))).await
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(SubscribeError::Unavailable("quota store stayed busy".into()))
    }

    /// Charges `actual` tokens (at most what was held) and one generation; queued work says
    /// how long it waited to start (`queue_wait`). The hold is read only when it did not move:
    /// unknown (404), or settled already — by a commit (the same answer again) or otherwise
    /// (409).
    pub async fn commit(
        &self,
        hold_id: &str,
        actual: u64,
        queue_wait: Option<Duration>,
    ) -> Result<Usage> {
        let id = hold_uuid(hold_id)?;
        let actual = i64::try_from(actual).unwrap_or(i64::MAX);
        let ending = Ending { outcome: Some("completed"), queue_wait_ms: waited_ms(queue_wait) };
        let settled = self.settle_retrying(id, "committed", actual, ending).await?;
        if let Settled::Yes(Some(row)) = &settled {
            let cur = self.current(row.user_id).await?;
            if cur.period_start == row.period_start {
                return Ok(usage_of(&cur, Some(row)));
            }
        }
        let h = self.find_hold(hold_id).await?;
        if settled == Settled::No && h.status != "committed" {
            return Err(SubscribeError::Conflict(format!("the hold was already {}", h.status)));
        }
        self.usage(h.user_id).await
    }

    /// Gives a hold back: its generation failed (by the platform: counted against the plan's
    /// availability) or was cancelled, or the caller does not say (`None`: not counted).
    pub async fn release(
        &self,
        hold_id: &str,
        reason: Option<Release>,
        queue_wait: Option<Duration>,
    ) -> Result<Usage> {
        let id = hold_uuid(hold_id)?;
        let outcome = reason.map(|r| match r {
            Release::Failed => "failed",
            Release::Cancelled => "cancelled",
        });
        let ending = Ending { outcome, queue_wait_ms: waited_ms(queue_wait) };
        let settled = self.settle_retrying(id, "released", 0, ending).await?;
        if let Settled::Yes(Some(row)) = &settled {
            return self.usage(row.user_id).await;
        }
        let h = self.find_hold(hold_id).await?;
        if settled == Settled::No && h.status == "committed" {
            return Err(SubscribeError::Conflict("the hold was already committed".into()));
        }
        self.usage(h.user_id).await
    }

    /// Returns holds past their expiry (one user's, or everyone's); safe on many replicas.
    pub async fn expire_due(&self, user: Option<Uuid>) -> Result<usize> {
        let mut n = 0;
        for h in self.quota.lapsed(user, 500).await? {
            if self.settle_retrying(h.id, "expired", 0, Ending::default()).await? != Settled::No {
                n += 1;
            }
        }
        Ok(n)
    }
}
