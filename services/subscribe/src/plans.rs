//! Plans as an operator edits them: created, given new terms, archived or offered again —
//! each change written with its audit entry in one transaction. Subscribers keep the terms
//! they bought until their period ends (`subscription.terms`); renewals and new subscribers get
//! the plan's terms of the day, and an archived plan is not renewed (its subscribers return to
//! free). Other replicas see a change within `PLANS_TTL` (their cache of the plans).

use sea_orm::TransactionTrait;
use skillup_kit::{
    audit::Actor,
    db::{is_busy, is_unique_violation},
    invalid::{self, at_most_chars, between, chars, required},
};

use crate::{
    error::{Result, SubscribeError},
    store::entities::plan,
    subscriptions::{FREE, Subscriptions},
    texts::text,
};

/// Attempts of a plan change that the database reports busy (SQLite under contention).
const BUSY_TRIES: u64 = 20;

async fn pause(attempt: u64) {
    tokio::time::sleep(std::time::Duration::from_millis(2 + attempt * 5)).await;
}

fn bad(field: &'static str, msg: String) -> SubscribeError {
    SubscribeError::Invalid(field, msg)
}

fn slug(field: &'static str, v: &str, max: usize) -> Result<()> {
    let ok = !v.is_empty()
        && v.chars().count() <= max
        && v.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
    if ok { Ok(()) } else { Err(bad(field, invalid::slug(field))) }
}

/// Checks a plan's terms as an operator typed them (priced in `selling`, the currency the
/// deployment sells in); the plan trimmed.
pub fn validate(mut p: plan::Model, selling: &str) -> Result<plan::Model> {
    slug("plan.id", &p.id, 32)?;
    p.title = p.title.trim().to_owned();
    if p.title.is_empty() || p.title.chars().count() > 120 || p.title.chars().any(char::is_control)
    {
        return Err(bad("plan.title", chars("plan.title", 1, 120)));
    }
    if !(0..=100_000_000).contains(&p.price_minor) {
        return Err(bad(
            "plan.price.amount_minor",
            between("plan.price.amount_minor", 0, 100_000_000),
        ));
    }
    let currency = p.currency.trim().to_ascii_uppercase();
    if currency.len() != 3 || !currency.chars().all(|c| c.is_ascii_uppercase()) {
        return Err(bad("plan.price.currency", invalid::currency("plan.price.currency")));
    }
    if currency != selling {
        return Err(bad(
            "plan.price.currency",
            invalid::currency_only("plan.price.currency", selling),
        ));
    }
    p.currency = currency;
    if !(1..=366).contains(&p.period_days) {
        return Err(bad("plan.period_days", between("plan.period_days", 1, 366)));
    }
    let functions: Vec<&str> = p.functions.split_whitespace().collect();
    if functions.is_empty() {
        return Err(bad("plan.functions", required("plan.functions")));
    }
    if functions.len() > 100 {
        return Err(bad("plan.functions", invalid::at_most_items("plan.functions", 100)));
    }
    for f in &functions {
        if *f != "*" {
            slug("plan.functions", f, 64)?;
        }
    }
    p.functions = functions.join(" ");
    if p.token_quota < 0 {
        return Err(bad("plan.token_quota", between("plan.token_quota", 0, i64::MAX)));
    }
    if p.generation_quota < 0 {
        return Err(bad(
            "plan.generation_quota",
            between("plan.generation_quota", 0, i32::MAX as i64),
        ));
    }
    slug("plan.rate_limit_tier", &p.rate_limit_tier, 32)?;
    if !(0..=9).contains(&p.priority) {
        return Err(bad("plan.priority", between("plan.priority", 0, 9)));
    }
    if !(0..=86_400_000).contains(&p.sla_queue_p95_ms) {
        return Err(bad(
            "plan.service_level.queue_start_p95_ms",
            between("plan.service_level.queue_start_p95_ms", 0, 86_400_000),
        ));
    }
    if !(0..=10_000).contains(&p.sla_availability_bp) {
        return Err(bad(
            "plan.service_level.availability_bp",
            between("plan.service_level.availability_bp", 0, 10_000),
        ));
    }
    if !(0..=100).contains(&p.sla_credit_percent) {
        return Err(bad(
            "plan.service_level.credit_percent",
            between("plan.service_level.credit_percent", 0, 100),
        ));
    }
    if p.id == FREE && p.price_minor != 0 {
        return Err(bad("plan.price.amount_minor", text("plan-free-stays", None)));
    }
    Ok(p)
}

fn reason(r: &str) -> Result<String> {
    skillup_kit::audit::reason(r, false).map_err(|m| bad("reason", m))
}

impl Subscriptions {
    /// Every plan, archived ones too (admins).
    pub async fn admin_plans(&self) -> Result<Vec<plan::Model>> {
        Ok(self.subs.plans().await?)
    }

    /// A new plan, audited.
    pub async fn create_plan(
        &self,
        actor: &Actor,
        p: plan::Model,
        why: &str,
    ) -> Result<plan::Model> {
        let p = validate(plan::Model { archived: false, ..p }, &self.selling)?;
        let why = reason(why)?;
        for attempt in 0..BUSY_TRIES {
            match self.try_create_plan(actor, &p, &why).await {
                Ok(()) => {
                    self.plans_changed();
                    return Ok(p);
                }
                Err(e) if is_unique_violation(&e) => {
                    return Err(SubscribeError::Conflict(text("plan-exists", None)));
                }
                Err(e) if is_busy(&e) => pause(attempt).await,
                Err(e) => return Err(e.into()),
            }
        }
        Err(SubscribeError::Unavailable("plans stayed busy".into()))
    }

    async fn try_create_plan(
        &self,
        actor: &Actor,
        p: &plan::Model,
        why: &str,
    ) -> std::result::Result<(), sea_orm::DbErr> {
        let txn = self.db.begin().await?;
        self.subs.insert_plan(&txn, p.clone()).await?;
        let entry = crate::events::plan_audit(actor, "plan.create", None, p, why);
        self.outbox.add(&txn, &entry.id.clone(), "", &entry).await?;
        txn.commit().await
    }

    /// New terms for plan `id` (everything but its code and whether it is archived), audited.
    pub async fn update_plan(
        &self,
        actor: &Actor,
        id: &str,
        p: plan::Model,
        why: &str,
    ) -> Result<plan::Model> {
        if !p.id.is_empty() && p.id != id {
            return Err(bad("plan.id", text("plan-code-mismatch", None)));
        }
        let p = validate(plan::Model { id: id.to_owned(), ..p }, &self.selling)?;
        let why = reason(why)?;
        self.change_plan_row(actor, "plan.update", id, &why, |before| plan::Model {
            archived: before.archived,
            ..p.clone()
        })
        .await
    }

    /// Archives plan `id` or offers it again, audited. The free plan is never archived.
    pub async fn archive_plan(
        &self,
        actor: &Actor,
        id: &str,
        archived: bool,
        why: &str,
    ) -> Result<plan::Model> {
        if id == FREE && archived {
            return Err(bad("plan_id", text("plan-free-stays", None)));
        }
        let why = reason(why)?;
        let action = if archived { "plan.archive" } else { "plan.unarchive" };
        self.change_plan_row(actor, action, id, &why, |before| plan::Model {
            archived,
            ..before.clone()
        })
        .await
    }

    /// Replaces plan `id`'s row by what `change` makes of it, with the audit entry, in one
    /// transaction holding the row; nothing written when nothing changes.
    pub(crate) async fn change_plan_row(
        &self,
        actor: &Actor,
        action: &str,
        id: &str,
        why: &str,
        change: impl Fn(&plan::Model) -> plan::Model,
    ) -> Result<plan::Model> {
        if id.chars().count() > 32 {
            return Err(bad("plan_id", at_most_chars("plan_id", 32)));
        }
        for attempt in 0..BUSY_TRIES {
            match self.try_change_plan_row(actor, action, id, why, &change).await {
                Ok(Some((after, changed))) => {
                    if changed {
                        self.plans_changed();
                    }
                    return Ok(after);
                }
                Ok(None) => return Err(SubscribeError::NotFound(format!("no plan `{id}`"))),
                // SQLite refuses a read transaction's upgrade to a write under contention
                // (its busy timeout does not cover it): the change runs again.
                Err(e) if is_busy(&e) => pause(attempt).await,
                Err(e) => return Err(e.into()),
            }
        }
        Err(SubscribeError::Unavailable("plans stayed busy".into()))
    }

    /// One attempt: the plan after the change and whether it changed (`None`: no such plan).
    async fn try_change_plan_row(
        &self,
        actor: &Actor,
        action: &str,
        id: &str,
        why: &str,
        change: &impl Fn(&plan::Model) -> plan::Model,
    ) -> std::result::Result<Option<(plan::Model, bool)>, sea_orm::DbErr> {
        let txn = self.db.begin().await?;
        let Some(before) = self.subs.plan_for_change(&txn, id).await? else {
            txn.rollback().await?;
            return Ok(None);
        };
        let after = change(&before);
        if after == before {
            txn.rollback().await?;
            return Ok(Some((before, false)));
        }
        self.subs.save_plan(&txn, after.clone()).await?;
        let entry = crate::events::plan_audit(actor, action, Some(&before), &after, why);
        self.outbox.add(&txn, &entry.id.clone(), "", &entry).await?;
        txn.commit().await?;
        Ok(Some((after, true)))
    }

    /// This replica reads the plans again at once (others within `PLANS_TTL`).
    fn plans_changed(&self) {
        *self.plans.write().expect("plans lock") = None;
        self.outbox.wake();
    }
}
