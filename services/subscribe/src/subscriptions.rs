//! Plans and subscriptions: the service's state, the plans (kept in memory a minute), a user's
//! current plan and period (cached, and on PostgreSQL the rows this replica last saw), usage.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use chrono::{DateTime, Datelike, SecondsFormat, TimeZone, Utc};
use sea_orm::{DatabaseConnection, DbBackend};
use skillup_kit::{bus::SharedBus, cache::SharedCache, outbox::Outbox};
use uuid::Uuid;

use crate::{
    billing::Billing,
    domain::{Plan, ServiceRecord, Subscription, SubscriptionStatus as Status, Usage},
    error::{Result, SubscribeError},
    store::{
        entities::{plan, subscription, usage},
        quota::QuotaStore,
        service::ServiceStore,
        subscriptions::SubscriptionStore,
    },
};

/// The plan of everyone without a paid subscription.
pub const FREE: &str = "free";

/// The selling currency when none is set (`payment.currency`'s default).
pub const DEFAULT_CURRENCY: &str = "RUB";

#[derive(Clone)]
pub struct Subscriptions {
    pub(crate) db: DatabaseConnection,
    pub(crate) cache: SharedCache,
    pub(crate) billing: Arc<dyn Billing>,
    pub(crate) plans: PlanCache,
    pub(crate) known: KnownRows,
    pub(crate) outbox: Outbox,
    pub(crate) quota: QuotaStore,
    pub(crate) subs: SubscriptionStore,
    /// The currency plans are sold in (see [`crate::selling`]).
    pub(crate) selling: String,
    pub(crate) service: ServiceStore,
    /// The service records as last listed, by how many months: when, and what.
    pub(crate) live: Arc<Mutex<LiveRecords>>,
    /// The last month this replica closed (`YYYY-MM`).
    pub(crate) closed_through: Arc<Mutex<Option<String>>>,
}

/// PostgreSQL: the subscription rows this replica's reserves last saw, used without asking the
/// cache, because the reserve statement checks the row it assumed against the table and takes
/// nothing when it changed (the reserve then reads it again). So a plan change made anywhere
/// applies to the very next reserve everywhere, with no cache read on the hot path.
pub(crate) type KnownRows = Arc<
    std::sync::RwLock<
        std::collections::HashMap<Uuid, (std::time::Instant, Option<subscription::Model>)>,
    >,
>;

/// How long a known row is used before it is read again (the check makes it safe for any
/// time; this bounds what idle users keep in memory), and how many are kept.
pub(crate) const KNOWN_TTL: Duration = Duration::from_secs(60);

pub(crate) const KNOWN_MAX: usize = 100_000;

/// Service records as last listed, by how many months they cover: when, and what.
pub(crate) type LiveRecords =
    std::collections::HashMap<u32, (std::time::Instant, Vec<ServiceRecord>)>;

/// The plans as last read, and when.
pub(crate) type PlanCache =
    Arc<std::sync::RwLock<Option<(std::time::Instant, Arc<Vec<plan::Model>>)>>>;

/// How long the plans stay in memory.
pub(crate) const PLANS_TTL: Duration = Duration::from_secs(60);

/// How long a user's subscription stays in the cache. Every change deletes it at once; the TTL
/// bounds the one race left (a replica that read the row just before a change caches the old
/// row just after the delete).
pub(crate) const CACHE_TTL: Duration = Duration::from_secs(30);

pub(crate) fn cache_key(user: Uuid) -> String {
    format!("sub:v4:{user}")
}

/// The cached form of a subscription row: `id|plan|status|start|end|cancel|terms` (times in
/// RFC 3339 to the nanosecond; the terms' JSON last, as it may hold `|`; empty without), or `-`
/// for "no row". Times round-trip exactly: the period start keys the
/// usage row, so a rounded one would be another period's row (`sub:cur:` entries held
/// milliseconds and did exactly that — a quota split in two).
pub(crate) fn encode(s: Option<&subscription::Model>) -> String {
    match s {
        None => "-".into(),
        Some(s) => format!(
            "{}|{}|{}|{}|{}|{}|{}",
            s.id,
            s.plan_id,
            s.status.as_str(),
            s.period_start.to_rfc3339_opts(SecondsFormat::Nanos, true),
            s.period_end.to_rfc3339_opts(SecondsFormat::Nanos, true),
            u8::from(s.cancel_at_period_end),
            s.terms.as_deref().unwrap_or_default()
        ),
    }
}

pub(crate) fn decode(user: Uuid, v: &str) -> Option<Option<subscription::Model>> {
    if v == "-" {
        return Some(None);
    }
    let p: Vec<&str> = v.splitn(7, '|').collect();
    let [id, plan, status, start, end, cancel, terms] = p.as_slice() else { return None };
    let time = |s: &str| DateTime::parse_from_rfc3339(s).ok().map(|t| t.with_timezone(&Utc));
    Some(Some(subscription::Model {
        id: Uuid::parse_str(id).ok()?,
        user_id: user,
        plan_id: (*plan).to_owned(),
        status: Status::parse(status)?,
        period_start: time(start)?,
        period_end: time(end)?,
        cancel_at_period_end: *cancel == "1",
        updated_at: Utc::now(),
        terms: (!terms.is_empty()).then(|| (*terms).to_owned()),
    }))
}

/// A user's plan right now, with its period.
#[derive(Debug, Clone)]
pub struct Current {
    pub plan: plan::Model,
    pub sub: Option<subscription::Model>,
    pub period_start: DateTime<Utc>,
    pub period_end: DateTime<Utc>,
}

/// The free plan's period: the calendar month (UTC).
pub(crate) fn month_of(t: DateTime<Utc>) -> (DateTime<Utc>, DateTime<Utc>) {
    let start = Utc.with_ymd_and_hms(t.year(), t.month(), 1, 0, 0, 0).single().unwrap_or(t);
    let (y, m) = if t.month() == 12 { (t.year() + 1, 1) } else { (t.year(), t.month() + 1) };
    let end = Utc.with_ymd_and_hms(y, m, 1, 0, 0, 0).single().unwrap_or(t);
    (start, end)
}

pub fn includes(plan: &plan::Model, function: &str) -> bool {
    plan.functions.split_whitespace().any(|f| f == "*" || f == function)
}

/// The period's usage: the plan's quota and the row's counts (none yet: nothing used).
pub(crate) fn usage_of(cur: &Current, u: Option<&usage::Model>) -> Usage {
    Usage {
        period_start: cur.period_start,
        period_end: cur.period_end,
        tokens_used: u.map_or(0, |u| u.tokens_used) as u64,
        tokens_held: u.map_or(0, |u| u.tokens_held) as u64,
        token_quota: cur.plan.token_quota.max(0) as u64,
        generations_used: u.map_or(0, |u| u.generations_used) as u32,
        generations_held: u.map_or(0, |u| u.generations_held) as u32,
        generation_quota: cur.plan.generation_quota.max(0) as u32,
    }
}

impl Subscriptions {
    pub fn new(
        db: DatabaseConnection,
        bus: SharedBus,
        cache: SharedCache,
        billing: Arc<dyn Billing>,
    ) -> Self {
        let outbox = Outbox::new(db.clone(), bus, crate::store::OUTBOX);
        let (quota, subs) = (QuotaStore::new(db.clone()), SubscriptionStore::new(db.clone()));
        let (plans, known) = (Arc::default(), Arc::default());
        let selling = DEFAULT_CURRENCY.to_owned();
        let service = ServiceStore::new(db.clone());
        let (live, closed_through) = (Arc::default(), Arc::default());
        Self {
            db,
            cache,
            billing,
            plans,
            known,
            outbox,
            quota,
            subs,
            selling,
            service,
            live,
            closed_through,
        }
    }

    /// Sells in `currency` (ISO 4217) instead of [`DEFAULT_CURRENCY`].
    pub fn selling_in(mut self, currency: &str) -> Self {
        self.selling = currency.to_owned();
        self
    }

    /// The currency plans are sold in.
    pub fn selling(&self) -> &str {
        &self.selling
    }

    /// The user's subscription row, through the cache (a cache that cannot answer is skipped:
    /// the database is the truth).
    pub(crate) async fn subscription_row(&self, user: Uuid) -> Result<Option<subscription::Model>> {
        if let Ok(Some(v)) = self.cache.get(&cache_key(user)).await
            && let Some(row) = std::str::from_utf8(&v).ok().and_then(|v| decode(user, v))
        {
            return Ok(row);
        }
        let row = self.subs.of_user(user).await?;
        let _ =
            self.cache.set(&cache_key(user), encode(row.as_ref()).into(), Some(CACHE_TTL)).await;
        Ok(row)
    }

    /// Drops the cached row after a change (on every replica: the cache is shared).
    /// A deleted account: its subscription ends now, without a refund or a renewal (the ledger
    /// keeps what was paid; usage counts stay, they name nobody).
    pub async fn forget_user(&self, user: Uuid) -> Result<()> {
        self.subs.end_now(user).await?;
        self.forget(user).await;
        Ok(())
    }

    pub(crate) async fn forget(&self, user: Uuid) {
        if let Err(e) = self.cache.delete(&cache_key(user)).await {
            tracing::warn!(error = %e, %user, "cached subscription not evicted; it expires on its own");
        }
    }

    /// Every plan, from memory: plans change only with migrations, so the table is read once
    /// a minute, not on every reserve.
    pub(crate) async fn all_plans(&self) -> Result<Arc<Vec<plan::Model>>> {
        if let Some((at, plans)) = self.plans.read().expect("plans lock").as_ref()
            && at.elapsed() < PLANS_TTL
        {
            return Ok(plans.clone());
        }
        let plans = Arc::new(self.subs.plans().await?);
        *self.plans.write().expect("plans lock") = Some((std::time::Instant::now(), plans.clone()));
        Ok(plans)
    }

    pub(crate) async fn plan(&self, id: &str) -> Result<plan::Model> {
        self.all_plans().await?.iter().find(|p| p.id == id).cloned().ok_or_else(|| {
            SubscribeError::NotFound(format!(
                "no plan `{}`",
                id.chars().take(32).collect::<String>()
            ))
        })
    }

    /// The user's plan and period now (renewing a subscription whose period just ended).
    pub async fn current(&self, user: Uuid) -> Result<Current> {
        let row = self.subscription_row(user).await?;
        self.current_of(user, row).await
    }

    /// [`Self::current`] from a subscription row already read.
    pub(crate) async fn current_of(
        &self,
        user: Uuid,
        mut sub: Option<subscription::Model>,
    ) -> Result<Current> {
        let now = Utc::now();
        if let Some(s) = &sub
            && s.status == Status::Active
            && s.period_end <= now
        {
            let fresh = self.subs.get(s.id).await?;
            if let Some(f) = fresh.filter(|f| f.status == Status::Active && f.period_end <= now) {
                self.renew(f).await?;
            }
            self.forget(user).await;
            sub = self.subscription_row(user).await?;
        }
        match sub {
            // The terms the period was bought on; the plan's current ones for rows older
            // than kept terms.
            Some(s) if s.status == Status::Active => Ok(Current {
                plan: match crate::store::subscriptions::terms_in(&s) {
                    Some(terms) => terms,
                    None => self.plan(&s.plan_id).await?,
                },
                period_start: s.period_start,
                period_end: s.period_end,
                sub: Some(s),
            }),
            other => {
                let (start, end) = month_of(now);
                Ok(Current {
                    plan: self.plan(FREE).await?,
                    sub: other,
                    period_start: start,
                    period_end: end,
                })
            }
        }
    }

    pub(crate) async fn usage_row(
        &self,
        user: Uuid,
        start: DateTime<Utc>,
    ) -> Result<Option<usage::Model>> {
        Ok(self.quota.usage(user, start).await?)
    }

    pub async fn usage(&self, user: Uuid) -> Result<Usage> {
        let cur = self.current(user).await?;
        let row = self.usage_row(user, cur.period_start).await?;
        Ok(usage_of(&cur, row.as_ref()))
    }

    /// The user's subscription as they see it: their paid one while active, else the free
    /// plan's (no id).
    pub async fn subscription(&self, user: Uuid) -> Result<Subscription> {
        let cur = self.current(user).await?;
        let row = self.usage_row(user, cur.period_start).await?;
        let usage = usage_of(&cur, row.as_ref());
        let (id, cancel) = match &cur.sub {
            Some(s) if s.status == Status::Active => (Some(s.id), s.cancel_at_period_end),
            _ => (None, false),
        };
        Ok(Subscription {
            id,
            user,
            plan: Plan::from(&cur.plan),
            status: Status::Active,
            period_start: cur.period_start,
            period_end: cur.period_end,
            cancel_at_period_end: cancel,
            usage,
        })
    }

    /// The subscription a reserve starts from, and whether it is a known row (PostgreSQL,
    /// see [`KnownRows`]) rather than one read now.
    pub(crate) async fn reserve_view(&self, user: Uuid) -> Result<(Current, bool)> {
        if self.db.get_database_backend() == DbBackend::Postgres {
            let known = self
                .known
                .read()
                .expect("known rows")
                .get(&user)
                .and_then(|(at, row)| (at.elapsed() < KNOWN_TTL).then(|| row.clone()));
            if let Some(row) = known {
                let cur = self.current_of(user, row.clone()).await?;
                if cur.sub != row {
                    // Renewed on the way.
                    self.remember(user, cur.sub.clone());
                }
                return Ok((cur, true));
            }
        }
        Ok((self.reread(user, false).await?, false))
    }

    /// Reads the user's subscription again — through the cache, or from the table itself
    /// (`from_table`, refreshing the cache) — and remembers it for the next reserves.
    pub(crate) async fn reread(&self, user: Uuid, from_table: bool) -> Result<Current> {
        if from_table {
            self.forget(user).await;
        }
        let row = self.subscription_row(user).await?;
        let cur = self.current_of(user, row).await?;
        if self.db.get_database_backend() == DbBackend::Postgres {
            self.remember(user, cur.sub.clone());
        }
        Ok(cur)
    }

    pub(crate) fn remember(&self, user: Uuid, row: Option<subscription::Model>) {
        let mut known = self.known.write().expect("known rows");
        if known.len() >= KNOWN_MAX {
            known.retain(|_, (at, _)| at.elapsed() < KNOWN_TTL);
            if known.len() >= KNOWN_MAX {
                known.clear();
            }
        }
        known.insert(user, (std::time::Instant::now(), row));
    }
}
