//! Plans, subscriptions, entitlements and quota. Quota is **hold → settle**: a reserve takes a
//! hold only through a conditional update (`used + held + asked <= quota`), so no mix of
//! concurrent calls can push use past the limit; commit charges the actual use (never more
//! than the hold), release returns it, and holds never settled expire back.

use std::{sync::Arc, time::Duration};

use chrono::{DateTime, Datelike, SecondsFormat, TimeZone, Utc};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DatabaseConnection, DbBackend, DbErr,
    EntityTrait, FromQueryResult, QueryFilter, QuerySelect, Set, Statement, TransactionTrait,
    sea_query::{Expr, ExprTrait, OnConflict},
};
use skillup_kit::{
    bus::SharedBus,
    cache::SharedCache,
    db::{is_busy as busy, is_unique_violation as unique_violation, timestamp as ts},
    outbox::Outbox,
};
use skillup_proto::{common::v1::Money, subscribe::v1 as pb};
use uuid::Uuid;

use crate::{
    error::{Result, SubscribeError},
    store::entities::{change, hold, plan, subscription, usage},
};

/// What a reserve attempt took.
#[derive(Debug)]
enum Taken {
    /// The hold, and the usage row it left.
    Yes(hold::Model, usage::Model),
    /// No room in the quota, or no usage row for the period yet.
    NoRoom,
    /// The subscription row the attempt assumed is not the table's any more: nothing taken.
    Stale,
}

/// Whether a settle moved the hold, and the usage row it left.
#[derive(Debug, PartialEq)]
enum Settled {
    No,
    Yes(Option<usage::Model>),
}

/// Longest a hold may live.
pub const MAX_HOLD_SECS: u32 = 86_400;
/// A hold's life when the caller does not say.
pub const DEFAULT_HOLD_SECS: u32 = 3_600;
/// How long a plan change may keep its claim before another change may take over (the claim of
/// a process that died mid-change); far longer than a charge may take.
const CHANGE_CLAIM: chrono::Duration = chrono::Duration::seconds(60);
/// The plan of everyone without a paid subscription.
pub const FREE: &str = "free";

/// Takes money for plans (the payment service).
#[async_trait::async_trait]
pub trait Billing: Send + Sync {
    /// Debits `amount` once per `key`; `InsufficientFunds` when the balance does not cover it.
    async fn charge(
        &self,
        user: Uuid,
        amount: i64,
        currency: &str,
        key: &str,
        description: &str,
    ) -> Result<()>;
}

/// Billing through `skillup.payment.v1.PaymentService/Charge`.
pub struct PaymentBilling {
    channel: skillup_kit::grpc::ServiceChannel,
}

impl PaymentBilling {
    pub fn new(channel: impl Into<skillup_kit::grpc::ServiceChannel>) -> Self {
        Self { channel: channel.into() }
    }
}

#[async_trait::async_trait]
impl Billing for PaymentBilling {
    async fn charge(
        &self,
        user: Uuid,
        amount: i64,
        currency: &str,
        key: &str,
        description: &str,
    ) -> Result<()> {
        use skillup_proto::payment::v1::{
            ChargeRequest, payment_service_client::PaymentServiceClient,
        };
        let mut client = PaymentServiceClient::new(self.channel.clone());
        let mut req = tonic::Request::new(ChargeRequest {
            user_id: user.to_string(),
            amount: Some(Money { amount_minor: amount, currency: currency.to_owned() }),
            idempotency_key: key.to_owned(),
            description: description.to_owned(),
        });
        req.set_timeout(Duration::from_secs(10));
        match client.charge(req).await {
            Ok(_) => Ok(()),
            Err(s) => match skillup_kit::error::detail_of(&s).map(|d| d.code()) {
                Some(skillup_proto::common::v1::ErrorCode::InsufficientFunds) => {
                    Err(SubscribeError::InsufficientFunds)
                }
                Some(skillup_proto::common::v1::ErrorCode::IdempotencyKeyReused) => {
                    Err(SubscribeError::KeyReused(
                        "this idempotency key was already used for another subscription request"
                            .into(),
                    ))
                }
                _ => Err(SubscribeError::Unavailable(format!(
                    "payment: {} {}",
                    s.code(),
                    s.message()
                ))),
            },
        }
    }
}

#[derive(Clone)]
pub struct Subscriptions {
    db: DatabaseConnection,
    cache: SharedCache,
    billing: Arc<dyn Billing>,
    plans: PlanCache,
    known: KnownRows,
    outbox: Outbox,
}

/// PostgreSQL: the subscription rows this replica's reserves last saw, used without asking the
/// cache, because the reserve statement checks the row it assumed against the table and takes
/// nothing when it changed (the reserve then reads it again). So a plan change made anywhere
/// applies to the very next reserve everywhere, with no cache read on the hot path.
type KnownRows = Arc<
    std::sync::RwLock<
        std::collections::HashMap<Uuid, (std::time::Instant, Option<subscription::Model>)>,
    >,
>;

/// How long a known row is used before it is read again (the check makes it safe for any
/// time; this bounds what idle users keep in memory), and how many are kept.
const KNOWN_TTL: Duration = Duration::from_secs(60);
const KNOWN_MAX: usize = 100_000;

/// The plans as last read, and when.
type PlanCache = Arc<std::sync::RwLock<Option<(std::time::Instant, Arc<Vec<plan::Model>>)>>>;

/// How long the plans stay in memory.
const PLANS_TTL: Duration = Duration::from_secs(60);

/// How long a user's subscription stays in the cache. Every change deletes it at once; the TTL
/// bounds the one race left (a replica that read the row just before a change caches the old
/// row just after the delete).
const CACHE_TTL: Duration = Duration::from_secs(30);

fn cache_key(user: Uuid) -> String {
    format!("sub:v2:{user}")
}

/// The cached form of a subscription row: `id|plan|status|start|end|cancel` (times in RFC 3339
/// to the nanosecond), or `-` for "no row". Times round-trip exactly: the period start keys the
/// usage row, so a rounded one would be another period's row (`sub:cur:` entries held
/// milliseconds and did exactly that — a quota split in two).
fn encode(s: Option<&subscription::Model>) -> String {
    match s {
        None => "-".into(),
        Some(s) => format!(
            "{}|{}|{}|{}|{}|{}",
            s.id,
            s.plan_id,
            s.status,
            s.period_start.to_rfc3339_opts(SecondsFormat::Nanos, true),
            s.period_end.to_rfc3339_opts(SecondsFormat::Nanos, true),
            u8::from(s.cancel_at_period_end)
        ),
    }
}

fn decode(user: Uuid, v: &str) -> Option<Option<subscription::Model>> {
    if v == "-" {
        return Some(None);
    }
    let p: Vec<&str> = v.split('|').collect();
    let [id, plan, status, start, end, cancel] = p.as_slice() else { return None };
    let time = |s: &str| DateTime::parse_from_rfc3339(s).ok().map(|t| t.with_timezone(&Utc));
    Some(Some(subscription::Model {
        id: Uuid::parse_str(id).ok()?,
        user_id: user,
        plan_id: (*plan).to_owned(),
        status: status.parse().ok()?,
        period_start: time(start)?,
        period_end: time(end)?,
        cancel_at_period_end: *cancel == "1",
        updated_at: Utc::now(),
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

fn hold_uuid(id: &str) -> Result<Uuid> {
    Uuid::parse_str(id)
        .map_err(|_| SubscribeError::Invalid("hold_id", "`hold_id` must be a UUID".into()))
}

/// The free plan's period: the calendar month (UTC).
fn month_of(t: DateTime<Utc>) -> (DateTime<Utc>, DateTime<Utc>) {
    let start = Utc.with_ymd_and_hms(t.year(), t.month(), 1, 0, 0, 0).single().unwrap_or(t);
    let (y, m) = if t.month() == 12 { (t.year() + 1, 1) } else { (t.year(), t.month() + 1) };
    let end = Utc.with_ymd_and_hms(y, m, 1, 0, 0, 0).single().unwrap_or(t);
    (start, end)
}

pub fn includes(plan: &plan::Model, function: &str) -> bool {
    plan.functions.split_whitespace().any(|f| f == "*" || f == function)
}

pub fn plan_pb(p: &plan::Model) -> pb::Plan {
    pb::Plan {
        id: p.id.clone(),
        title: p.title.clone(),
        price: Some(Money { amount_minor: p.price_minor, currency: p.currency.clone() }),
        period_days: p.period_days as u32,
        functions: p.functions.split_whitespace().map(str::to_owned).collect(),
        token_quota: p.token_quota as u64,
        generation_quota: p.generation_quota as u32,
        rate_limit_tier: p.rate_limit_tier.clone(),
        priority: p.priority as u32,
    }
}

fn usage_pb(cur: &Current, u: Option<&usage::Model>) -> pb::Usage {
    pb::Usage {
        period_start: Some(ts(cur.period_start)),
        period_end: Some(ts(cur.period_end)),
        tokens_used: u.map_or(0, |u| u.tokens_used) as u64,
        tokens_held: u.map_or(0, |u| u.tokens_held) as u64,
        token_quota: cur.plan.token_quota as u64,
        generations_used: u.map_or(0, |u| u.generations_used) as u32,
        generations_held: u.map_or(0, |u| u.generations_held) as u32,
        generation_quota: cur.plan.generation_quota as u32,
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
        Self { db, cache, billing, plans: Arc::default(), known: Arc::default(), outbox }
    }

    /// The user's subscription row, through the cache (a cache that cannot answer is skipped:
    /// the database is the truth).
    async fn subscription_row(&self, user: Uuid) -> Result<Option<subscription::Model>> {
        if let Ok(Some(v)) = self.cache.get(&cache_key(user)).await
            && let Some(row) = std::str::from_utf8(&v).ok().and_then(|v| decode(user, v))
        {
            return Ok(row);
        }
        let row = subscription::Entity::find()
            .filter(subscription::Column::UserId.eq(user))
            .one(&self.db)
            .await?;
        let _ =
            self.cache.set(&cache_key(user), encode(row.as_ref()).into(), Some(CACHE_TTL)).await;
        Ok(row)
    }

    /// Drops the cached row after a change (on every replica: the cache is shared).
    async fn forget(&self, user: Uuid) {
        if let Err(e) = self.cache.delete(&cache_key(user)).await {
            tracing::warn!(error = %e, %user, "cached subscription not evicted; it expires on its own");
        }
    }

    /// Every plan, from memory: plans change only with migrations, so the table is read once
    /// a minute, not on every reserve.
    async fn all_plans(&self) -> Result<Arc<Vec<plan::Model>>> {
        if let Some((at, plans)) = self.plans.read().expect("plans lock").as_ref()
            && at.elapsed() < PLANS_TTL
        {
            return Ok(plans.clone());
        }
        let mut plans = plan::Entity::find().all(&self.db).await?;
        plans.sort_by_key(|p| (p.price_minor, p.id.clone()));
        let plans = Arc::new(plans);
        *self.plans.write().expect("plans lock") = Some((std::time::Instant::now(), plans.clone()));
        Ok(plans)
    }

    pub async fn plans(&self) -> Result<Vec<pb::Plan>> {
        Ok(self.all_plans().await?.iter().map(plan_pb).collect())
    }

    async fn plan(&self, id: &str) -> Result<plan::Model> {
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
    async fn current_of(
        &self,
        user: Uuid,
        mut sub: Option<subscription::Model>,
    ) -> Result<Current> {
        let now = Utc::now();
        if let Some(s) = &sub
            && s.status == pb::SubscriptionStatus::Active as i32
            && s.period_end <= now
        {
            let fresh = subscription::Entity::find_by_id(s.id).one(&self.db).await?;
            if let Some(f) = fresh.filter(|f| {
                f.status == pb::SubscriptionStatus::Active as i32 && f.period_end <= now
            }) {
                self.renew(f).await?;
            }
            self.forget(user).await;
            sub = self.subscription_row(user).await?;
        }
        match sub {
            Some(s) if s.status == pb::SubscriptionStatus::Active as i32 => Ok(Current {
                plan: self.plan(&s.plan_id).await?,
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

    async fn usage_row(&self, user: Uuid, start: DateTime<Utc>) -> Result<Option<usage::Model>> {
        Ok(usage::Entity::find_by_id((user, start)).one(&self.db).await?)
    }

    pub async fn usage(&self, user: Uuid) -> Result<pb::Usage> {
        let cur = self.current(user).await?;
        let row = self.usage_row(user, cur.period_start).await?;
        Ok(usage_pb(&cur, row.as_ref()))
    }

    pub async fn subscription_pb(&self, user: Uuid) -> Result<pb::Subscription> {
        let cur = self.current(user).await?;
        let row = self.usage_row(user, cur.period_start).await?;
        let usage = usage_pb(&cur, row.as_ref());
        let (id, status, cancel) = match &cur.sub {
            Some(s) if s.status == pb::SubscriptionStatus::Active as i32 => {
                (s.id.to_string(), pb::SubscriptionStatus::Active, s.cancel_at_period_end)
            }
            _ => (String::new(), pb::SubscriptionStatus::Active, false),
        };
        Ok(pb::Subscription {
            id,
            user_id: user.to_string(),
            plan: Some(plan_pb(&cur.plan)),
            status: status as i32,
            current_period_start: Some(ts(cur.period_start)),
            current_period_end: Some(ts(cur.period_end)),
            cancel_at_period_end: cancel,
            usage: Some(usage),
        })
    }

    /// Whether the plan allows `function` and quota is left.
    pub async fn entitlement(
        &self,
        user: Uuid,
        function: &str,
    ) -> Result<pb::CheckEntitlementResponse> {
        let cur = self.current(user).await?;
        let deny = |reason: pb::DenyReason, message: String| pb::CheckEntitlementResponse {
            allowed: false,
            reason: reason as i32,
            message,
            plan: cur.plan.id.clone(),
            priority: cur.plan.priority as u32,
        };
        if !includes(&cur.plan, function) {
            return Ok(deny(
                pb::DenyReason::FunctionNotInPlan,
                format!(
                    "`{function}` is unavailable on the {} plan — subscribe to a plan that includes it (недоступно — оформите подписку)",
                    cur.plan.title
                ),
            ));
        }
        let u = self.usage_row(user, cur.period_start).await?;
        let (tu, th, gu, gh) = u.map_or((0, 0, 0, 0), |u| {
            (u.tokens_used, u.tokens_held, u.generations_used, u.generations_held)
        });
        if tu + th >= cur.plan.token_quota || gu + gh >= cur.plan.generation_quota {
            return Ok(deny(
                pb::DenyReason::QuotaExhausted,
                "this period's quota is used up — upgrade your plan (квота исчерпана — смените тариф)".into(),
            ));
        }
        Ok(pb::CheckEntitlementResponse {
            allowed: true,
            reason: pb::DenyReason::Unspecified as i32,
            message: String::new(),
            plan: cur.plan.id.clone(),
            priority: cur.plan.priority as u32,
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
    ) -> Result<(hold::Model, pb::Usage, u32)> {
        if tokens == 0 || tokens > 10_000_000 {
            return Err(SubscribeError::Invalid("tokens", "`tokens` must be 1..=10000000".into()));
        }
        if key.len() > 128 {
            return Err(SubscribeError::Invalid(
                "idempotency_key",
                "`idempotency_key` is at most 128 characters".into(),
            ));
        }
        let ttl = match ttl {
            0 => DEFAULT_HOLD_SECS,
            t if t > MAX_HOLD_SECS => {
                return Err(SubscribeError::Invalid(
                    "ttl_seconds",
                    format!("`ttl_seconds` is at most {MAX_HOLD_SECS}"),
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
                Err(SubscribeError::SubscriptionRequired(format!(
                    "`{function}` is not in the {} plan",
                    cur.plan.title
                )))
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
        // The hot path is one transaction: a retried key is found by its unique violation (or
        // when the quota looks spent), and lapsed holds are reclaimed only when they stand in
        // the way (the periodic job reclaims the rest).
        let (mut reclaimed, mut rereads) = (false, 0);
        for attempt in 0..50u64 {
            match self.try_reserve(user, &cur, tokens, &idem, ttl).await {
                Ok(Taken::Yes(h, row)) => {
                    return Ok((h, usage_pb(&cur, Some(&row)), priority(&cur)));
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
                        return Ok((found.0, found.1, priority(&cur)));
                    }
                    if !reclaimed {
                        reclaimed = true;
                        if self.expire_due(Some(user)).await? > 0 {
                            continue;
                        }
                    }
                    let row = self.usage_row(user, cur.period_start).await?;
                    let u = usage_pb(&cur, row.as_ref());
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
                        return Ok((found.0, found.1, priority(&cur)));
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
    async fn hold_by_key(
        &self,
        cur: &Current,
        idem: &str,
    ) -> Result<Option<(hold::Model, pb::Usage)>> {
        let Some(h) =
            hold::Entity::find().filter(hold::Column::Idempotency.eq(idem)).one(&self.db).await?
        else {
            return Ok(None);
        };
        if h.status != "held" {
            return Err(SubscribeError::KeyReused(format!(
                "the hold of this idempotency key was already {}; reserve with a new key",
                h.status
            )));
        }
        let row = self.usage_row(h.user_id, h.period_start).await?;
        Ok(Some((h, usage_pb(cur, row.as_ref()))))
    }

    /// The subscription a reserve starts from, and whether it is a known row (PostgreSQL,
    /// see [`KnownRows`]) rather than one read now.
    async fn reserve_view(&self, user: Uuid) -> Result<(Current, bool)> {
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
    async fn reread(&self, user: Uuid, from_table: bool) -> Result<Current> {
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

    fn remember(&self, user: Uuid, row: Option<subscription::Model>) {
        let mut known = self.known.write().expect("known rows");
        if known.len() >= KNOWN_MAX {
            known.retain(|_, (at, _)| at.elapsed() < KNOWN_TTL);
            if known.len() >= KNOWN_MAX {
                known.clear();
            }
        }
        known.insert(user, (std::time::Instant::now(), row));
    }

    /// One attempt at a hold: the usage row's conditional increment (returning the row) and
    /// the hold, in one transaction.
    async fn try_reserve(
        &self,
        user: Uuid,
        cur: &Current,
        tokens: i64,
        idem: &str,
        ttl: u32,
    ) -> std::result::Result<Taken, DbErr> {
        let now = Utc::now();
        let h = hold::Model {
            id: Uuid::now_v7(),
            user_id: user,
            period_start: cur.period_start,
            tokens,
            status: "held".into(),
            actual_tokens: 0,
            idempotency: idem.to_owned(),
            expires_at: now + chrono::Duration::seconds(i64::from(ttl)),
            created_at: now,
        };
        for attempt in 0..2 {
            if self.db.get_database_backend() == DbBackend::Postgres {
                match self.reserve_in_one_statement(&h, cur).await? {
                    Taken::NoRoom if attempt == 0 => {
                        self.ensure_usage_row(user, cur.period_start).await?;
                        continue;
                    }
                    taken => return Ok(taken),
                }
            }
            let txn = self.db.begin().await?;
            let mut taken = usage::Entity::update_many()
                .col_expr(
                    usage::Column::TokensHeld,
                    Expr::col(usage::Column::TokensHeld).add(tokens),
                )
                .col_expr(
                    usage::Column::GenerationsHeld,
                    Expr::col(usage::Column::GenerationsHeld).add(1),
                )
                .filter(usage::Column::UserId.eq(user))
                .filter(usage::Column::PeriodStart.eq(cur.period_start))
                .filter(
                    Expr::col(usage::Column::TokensUsed)
                        .add(Expr::col(usage::Column::TokensHeld))
                        .add(tokens)
                        .lte(cur.plan.token_quota),
                )
                .filter(
                    Expr::col(usage::Column::GenerationsUsed)
                        .add(Expr::col(usage::Column::GenerationsHeld))
                        .add(1)
                        .lte(cur.plan.generation_quota),
                )
                .exec_with_returning(&txn)
                .await?;
            let Some(row) = taken.pop() else {
                txn.rollback().await?;
                // No room — or no usage row yet for this period (a concurrent first reserve
                // may be creating it): make sure it exists and try once more; a second miss is
                // a real refusal.
                if attempt == 1 {
                    return Ok(Taken::NoRoom);
                }
                self.ensure_usage_row(user, cur.period_start).await?;
                continue;
            };
            let h = hold::ActiveModel::from(h).insert(&txn).await?;
            txn.commit().await?;
            return Ok(Taken::Yes(h, row));
        }
        Ok(Taken::NoRoom)
    }

    /// PostgreSQL's hot path: room taken in the usage row and the hold inserted from its result
    /// in one statement — one round trip and one implicit transaction instead of four round
    /// trips. A statement is atomic: a duplicate key (unique violation) takes nothing.
    ///
    /// The statement also checks the subscription the reserve assumed (the plan and period in
    /// `cur`, from a row this replica may have read a while ago, see [`KnownRows`]) against the
    /// table, and takes nothing when it changed: [`Taken::Stale`].
    ///
    /// It commits without waiting for the WAL flush (`synchronous_commit = off`, for this
    /// transaction only — PostgreSQL's documented per-transaction trade): a hold is a
    /// reservation, and what makes it count is its settle, which does wait, and whose flush
    /// carries every earlier record with it — a task's row likewise, before its 202. So a
    /// database crash can lose only holds of the last few hundred ms that nothing durable
    /// followed yet; their generations then find no hold to charge (under-charge, never over)
    /// and the quota they held is free again. Concurrency is untouched: the row lock and the
    /// quota check are the same.
    async fn reserve_in_one_statement(
        &self,
        h: &hold::Model,
        cur: &Current,
    ) -> std::result::Result<Taken, DbErr> {
        // `$10` is the paid plan assumed (NULL: the free plan, no active subscription).
        const SQL: &str = r#"
            WITH async_commit AS (
                SELECT set_config('synchronous_commit', 'off', true)
            ), fresh AS (
                SELECT CASE WHEN $10::text IS NULL THEN NOT EXISTS (
                    SELECT 1 FROM subscribe_subscriptions WHERE user_id = $2 AND status = $12
                ) ELSE EXISTS (
                    SELECT 1 FROM subscribe_subscriptions
                     WHERE user_id = $2 AND status = $12 AND plan_id = $10
                       AND period_start = $3 AND period_end = $11
                ) END AS ok
            ), taken AS (
                UPDATE subscribe_usage
                   SET tokens_held = tokens_held + $1, generations_held = generations_held + 1
                 WHERE user_id = $2 AND period_start = $3
                   AND tokens_used + tokens_held + $1 <= $4
                   AND generations_used + generations_held + 1 <= $5
                   AND (SELECT ok FROM fresh)
                RETURNING *
            ), held AS (
                INSERT INTO subscribe_holds
                    (id, user_id, period_start, tokens, status, actual_tokens, idempotency,
                     expires_at, created_at)
                SELECT $6, $2, $3, $1, 'held', 0, $7, $8, $9 FROM taken
            )
            SELECT fresh.ok AS fresh, taken.*
              FROM fresh CROSS JOIN async_commit LEFT JOIN taken ON true"#;
        let paid = cur.sub.as_ref().filter(|s| s.status == pb::SubscriptionStatus::Active as i32);
        let stmt = Statement::from_sql_and_values(
            DbBackend::Postgres,
            SQL,
            [
                h.tokens.into(),
                h.user_id.into(),
                h.period_start.into(),
                cur.plan.token_quota.into(),
                cur.plan.generation_quota.into(),
                h.id.into(),
                h.idempotency.clone().into(),
                h.expires_at.into(),
                h.created_at.into(),
                paid.map(|s| s.plan_id.clone()).into(),
                cur.period_end.into(),
                (pb::SubscriptionStatus::Active as i32).into(),
            ],
        );
        let res = self
            .db
            .query_one_raw(stmt)
            .await?
            .ok_or_else(|| DbErr::Custom("reserving returned no row".into()))?;
        if !res.try_get::<bool>("", "fresh")? {
            return Ok(Taken::Stale);
        }
        Ok(match usage::Model::from_query_result_optional(&res, "")? {
            Some(row) => Taken::Yes(h.clone(), row),
            None => Taken::NoRoom,
        })
    }

    /// The user's usage row for a period, created empty if missing (concurrent creators agree).
    async fn ensure_usage_row(
        &self,
        user: Uuid,
        period_start: DateTime<Utc>,
    ) -> std::result::Result<(), DbErr> {
        usage::Entity::insert(usage::ActiveModel {
            user_id: Set(user),
            period_start: Set(period_start),
            tokens_used: Set(0),
            tokens_held: Set(0),
            generations_used: Set(0),
            generations_held: Set(0),
        })
        .on_conflict_do_nothing_on([usage::Column::UserId, usage::Column::PeriodStart])
        .exec(&self.db)
        .await?;
        Ok(())
    }

    async fn find_hold(&self, id: &str) -> Result<hold::Model> {
        let id = hold_uuid(id)?;
        hold::Entity::find_by_id(id)
            .one(&self.db)
            .await?
            .ok_or_else(|| SubscribeError::NotFound(format!("no hold {id}")))
    }

    /// Ends a hold: `commit` charges `actual` tokens (at most what was held) and one
    /// generation; otherwise (`release`, `expire`) everything goes back. Exactly once: the
    /// status moves from `held` by a conditional update.
    async fn settle(&self, id: Uuid, to: &str, actual: i64) -> std::result::Result<Settled, DbErr> {
        if self.db.get_database_backend() == DbBackend::Postgres {
            return self.settle_in_one_statement(id, to, actual).await;
        }
        let txn = self.db.begin().await?;
        let Some(h) = hold::Entity::find_by_id(id).one(&txn).await? else {
            txn.rollback().await?;
            return Ok(Settled::No);
        };
        let actual = Ord::min(actual, h.tokens);
        let moved = hold::Entity::update_many()
            .col_expr(hold::Column::Status, Expr::value(to))
            .col_expr(hold::Column::ActualTokens, Expr::value(actual))
            .filter(hold::Column::Id.eq(h.id))
            .filter(hold::Column::Status.eq("held"))
            .exec(&txn)
            .await?;
        if moved.rows_affected != 1 {
            txn.rollback().await?;
            return Ok(Settled::No);
        }
        let used_gens = i32::from(to == "committed");
        let mut row = usage::Entity::update_many()
            .col_expr(usage::Column::TokensHeld, Expr::col(usage::Column::TokensHeld).sub(h.tokens))
            .col_expr(usage::Column::TokensUsed, Expr::col(usage::Column::TokensUsed).add(actual))
            .col_expr(
                usage::Column::GenerationsHeld,
                Expr::col(usage::Column::GenerationsHeld).sub(1),
            )
            .col_expr(
                usage::Column::GenerationsUsed,
                Expr::col(usage::Column::GenerationsUsed).add(used_gens),
            )
            .filter(usage::Column::UserId.eq(h.user_id))
            .filter(usage::Column::PeriodStart.eq(h.period_start))
            .exec_with_returning(&txn)
            .await?;
        txn.commit().await?;
        Ok(Settled::Yes(row.pop()))
    }

    /// PostgreSQL: [`Self::settle`] as one statement, by the hold's id alone (one round trip
    /// instead of five: no read of the hold first, the cap at what was held is in the SQL).
    async fn settle_in_one_statement(
        &self,
        id: Uuid,
        to: &str,
        actual: i64,
    ) -> std::result::Result<Settled, DbErr> {
        const SQL: &str = r#"
            WITH moved AS (
                UPDATE subscribe_holds SET status = $1, actual_tokens = LEAST($2, tokens)
                 WHERE id = $3 AND status = 'held'
                RETURNING user_id, period_start, tokens, actual_tokens
            ), used AS (
                UPDATE subscribe_usage u
                   SET tokens_held = u.tokens_held - m.tokens,
                       tokens_used = u.tokens_used + m.actual_tokens,
                       generations_held = u.generations_held - 1,
                       generations_used = u.generations_used + $4
                  FROM moved m
                 WHERE u.user_id = m.user_id AND u.period_start = m.period_start
                RETURNING u.*
            )
            SELECT (SELECT count(*) FROM moved) AS moved, used.*
              FROM (SELECT 1) AS one LEFT JOIN used ON true"#;
        let stmt = Statement::from_sql_and_values(
            DbBackend::Postgres,
            SQL,
            [to.into(), actual.into(), id.into(), i32::from(to == "committed").into()],
        );
        let res = self
            .db
            .query_one_raw(stmt)
            .await?
            .ok_or_else(|| DbErr::Custom("settling returned no row".into()))?;
        if res.try_get::<i64>("", "moved")? == 0 {
            return Ok(Settled::No);
        }
        Ok(Settled::Yes(usage::Model::from_query_result_optional(&res, "")?))
    }

    async fn settle_retrying(&self, id: Uuid, to: &str, actual: i64) -> Result<Settled> {
        for attempt in 0..50u64 {
            match self.settle(id, to, actual).await {
                Ok(done) => return Ok(done),
                Err(e) if busy(&e) => {
                    tokio::time::sleep(Duration::from_millis(2 + Ord::min(attempt * 3, 50))).await
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(SubscribeError::Unavailable("quota store stayed busy".into()))
    }

    /// Charges `actual` tokens (at most what was held) and one generation. The hold is read
    /// only when it did not move: unknown (404), or settled already — by a commit (the same
    /// answer again) or otherwise (409).
    pub async fn commit(&self, hold_id: &str, actual: u64) -> Result<pb::Usage> {
        let id = hold_uuid(hold_id)?;
        let actual = i64::try_from(actual).unwrap_or(i64::MAX);
        let settled = self.settle_retrying(id, "committed", actual).await?;
        if let Settled::Yes(Some(row)) = &settled {
            let cur = self.current(row.user_id).await?;
            if cur.period_start == row.period_start {
                return Ok(usage_pb(&cur, Some(row)));
            }
        }
        let h = self.find_hold(hold_id).await?;
        if settled == Settled::No && h.status != "committed" {
            return Err(SubscribeError::Conflict(format!("the hold was already {}", h.status)));
        }
        self.usage(h.user_id).await
    }

    pub async fn release(&self, hold_id: &str) -> Result<pb::Usage> {
        let id = hold_uuid(hold_id)?;
        let settled = self.settle_retrying(id, "released", 0).await?;
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
        let mut q = hold::Entity::find()
            .filter(hold::Column::Status.eq("held"))
            .filter(hold::Column::ExpiresAt.lt(Utc::now()));
        if let Some(u) = user {
            q = q.filter(hold::Column::UserId.eq(u));
        }
        let mut n = 0;
        for h in q.limit(500).all(&self.db).await? {
            if self.settle_retrying(h.id, "expired", 0).await? != Settled::No {
                n += 1;
            }
        }
        Ok(n)
    }

    /// Subscribes to (or switches to) `plan_id`. Every change is charged once, under its own
    /// key (the client's idempotency key, or the change's id), and only one change per user
    /// runs at a time, so concurrent subscribes cannot both pay. A switch between paid plans
    /// credits the unused part of the current one and keeps the period's usage (it never starts
    /// the quota again from zero).
    pub async fn subscribe(
        &self,
        user: Uuid,
        plan_id: &str,
        key: &str,
    ) -> Result<pb::Subscription> {
        if plan_id.is_empty() {
            return Err(SubscribeError::Invalid("plan", "`plan` is required".into()));
        }
        let plan = self.plan(plan_id).await?;
        if plan.id == FREE {
            return Err(SubscribeError::Invalid(
                "plan",
                "everyone has the free plan; cancel a paid plan to return to it".into(),
            ));
        }
        if let Some(s) =
            self.current(user).await?.sub.filter(|s| {
                s.status == pb::SubscriptionStatus::Active as i32 && s.plan_id == plan.id
            })
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
    async fn keep(&self, user: Uuid, s: &subscription::Model) -> Result<pb::Subscription> {
        if s.cancel_at_period_end {
            subscription::Entity::update_many()
                .col_expr(subscription::Column::CancelAtPeriodEnd, Expr::value(false))
                .col_expr(subscription::Column::UpdatedAt, Expr::value(Utc::now()))
                .filter(subscription::Column::Id.eq(s.id))
                .exec(&self.db)
                .await?;
            self.forget(user).await;
        }
        self.subscription_pb(user).await
    }

    /// Claims the user's one plan change in progress. A claim older than [`CHANGE_CLAIM`] was
    /// left by a process that died mid-change and is taken over.
    async fn claim_change(&self, user: Uuid) -> Result<Uuid> {
        let id = Uuid::now_v7();
        for attempt in 0..20u64 {
            let now = Utc::now();
            let claim = change::ActiveModel {
                user_id: Set(user),
                change_id: Set(id),
                started_at: Set(now),
            };
            match change::Entity::insert(claim).exec_without_returning(&self.db).await {
                Ok(_) => return Ok(id),
                Err(e) if unique_violation(&e) => {
                    let stale = change::Entity::delete_many()
                        .filter(change::Column::UserId.eq(user))
                        .filter(change::Column::StartedAt.lt(now - CHANGE_CLAIM))
                        .exec(&self.db)
                        .await?
                        .rows_affected;
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

    async fn release_change(&self, user: Uuid, change: Uuid) {
        let res = change::Entity::delete_many()
            .filter(change::Column::UserId.eq(user))
            .filter(change::Column::ChangeId.eq(change))
            .exec(&self.db)
            .await;
        if let Err(e) = res {
            tracing::warn!(error = %e, %user, "plan change claim not released; it lapses on its own");
        }
    }

    /// The change itself, under its claim: the state read from the table, the charge, then the
    /// row, its event and the end of the claim in one transaction.
    async fn change_plan(
        &self,
        user: Uuid,
        plan: &plan::Model,
        key: &str,
        change: Uuid,
    ) -> Result<pb::Subscription> {
        let row = subscription::Entity::find()
            .filter(subscription::Column::UserId.eq(user))
            .one(&self.db)
            .await?;
        let cur = self.current_of(user, row).await?;
        let now = Utc::now();
        let active = cur.sub.clone().filter(|s| s.status == pb::SubscriptionStatus::Active as i32);
        if let Some(s) = active.as_ref().filter(|s| s.plan_id == plan.id) {
            // A concurrent change to the same plan (or a retry) got here first.
            self.release_change(user, change).await;
            return self.keep(user, s).await;
        }
        let credit = match &active {
            Some(s) if cur.plan.price_minor > 0 => {
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
        let ours = change::Entity::delete_many()
            .filter(change::Column::UserId.eq(user))
            .filter(change::Column::ChangeId.eq(change))
            .exec(&txn)
            .await?
            .rows_affected;
        if ours != 1 {
            txn.rollback().await?;
            tracing::error!(%user, %change, price, "a plan change outlived its claim after charging");
            return Err(SubscribeError::Unavailable("the plan change was superseded".into()));
        }
        // One row per user: a first subscribe inserts it, later ones update it.
        subscription::Entity::insert(subscription::ActiveModel {
            id: Set(Uuid::now_v7()),
            user_id: Set(user),
            plan_id: Set(plan.id.clone()),
            status: Set(pb::SubscriptionStatus::Active as i32),
            period_start: Set(start),
            period_end: Set(end),
            cancel_at_period_end: Set(false),
            updated_at: Set(now),
        })
        .on_conflict(
            OnConflict::column(subscription::Column::UserId)
                .update_columns([
                    subscription::Column::PlanId,
                    subscription::Column::Status,
                    subscription::Column::PeriodStart,
                    subscription::Column::PeriodEnd,
                    subscription::Column::CancelAtPeriodEnd,
                    subscription::Column::UpdatedAt,
                ])
                .to_owned(),
        )
        .exec_without_returning(&txn)
        .await?;
        self.changed(&txn, user, &plan.id, pb::SubscriptionStatus::Active, end).await?;
        txn.commit().await?;
        self.committed(user).await;
        self.subscription_pb(user).await
    }

    /// Cancels at the end of the current period.
    pub async fn cancel(&self, user: Uuid) -> Result<pb::Subscription> {
        let cur = self.current(user).await?;
        let Some(s) = cur.sub.filter(|s| s.status == pb::SubscriptionStatus::Active as i32) else {
            return Err(SubscribeError::NotFound("there is no paid subscription to cancel".into()));
        };
        let txn = self.db.begin().await?;
        subscription::Entity::update_many()
            .col_expr(subscription::Column::CancelAtPeriodEnd, Expr::value(true))
            .col_expr(subscription::Column::UpdatedAt, Expr::value(Utc::now()))
            .filter(subscription::Column::Id.eq(s.id))
            .exec(&txn)
            .await?;
        self.changed(&txn, user, &s.plan_id, pb::SubscriptionStatus::Canceled, s.period_end)
            .await?;
        txn.commit().await?;
        self.committed(user).await;
        self.subscription_pb(user).await
    }

    /// Renews one subscription whose period ended: charges the next period once (the key is
    /// the user, plan and the period's start), advances it with a conditional update, or
    /// expires it to free when it was cancelled or cannot be paid. Safe on many replicas.
    async fn renew(&self, s: subscription::Model) -> Result<()> {
        use pb::SubscriptionStatus::{Active, Expired};
        if s.cancel_at_period_end {
            self.advance_or_expire(&s, Expired, s.period_end, FREE).await?;
            return Ok(());
        }
        let plan = self.plan(&s.plan_id).await?;
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
                self.advance_or_expire(&s, Active, next_end, &plan.id).await?;
                Ok(())
            }
            Err(SubscribeError::InsufficientFunds) => {
                if self.advance_or_expire(&s, Expired, s.period_end, FREE).await? {
                    tracing::info!(user_id = %s.user_id, plan = %plan.id, "renewal not paid: back to free");
                }
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Moves an ended period on (`Active`, to `end`) or expires it, by a conditional update
    /// that only one replica wins, with its event in the same transaction. `false`: another
    /// replica did it already.
    async fn advance_or_expire(
        &self,
        s: &subscription::Model,
        status: pb::SubscriptionStatus,
        end: DateTime<Utc>,
        event_plan: &str,
    ) -> Result<bool> {
        let mut q = subscription::Entity::update_many()
            .col_expr(subscription::Column::UpdatedAt, Expr::value(Utc::now()))
            .filter(subscription::Column::Id.eq(s.id))
            .filter(subscription::Column::PeriodEnd.eq(s.period_end))
            .filter(subscription::Column::Status.eq(pb::SubscriptionStatus::Active as i32));
        if status == pb::SubscriptionStatus::Active {
            q = q
                .col_expr(subscription::Column::PeriodStart, Expr::value(s.period_end))
                .col_expr(subscription::Column::PeriodEnd, Expr::value(end));
        } else {
            q = q.col_expr(subscription::Column::Status, Expr::value(status as i32));
        }
        let txn = self.db.begin().await?;
        if q.exec(&txn).await?.rows_affected != 1 {
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
        let due = subscription::Entity::find()
            .filter(subscription::Column::Status.eq(pb::SubscriptionStatus::Active as i32))
            .filter(subscription::Column::PeriodEnd.lte(Utc::now()))
            .limit(500)
            .all(&self.db)
            .await?;
        let n = due.len();
        for s in due {
            if let Err(e) = self.renew(s).await {
                tracing::warn!(error = %e, "renewal failed; retried on the next run");
            }
        }
        Ok(n)
    }

    /// Stores `subscription.changed` in `txn`, the transaction of the change it reports.
    async fn changed<C: ConnectionTrait>(
        &self,
        txn: &C,
        user: Uuid,
        plan: &str,
        status: pb::SubscriptionStatus,
        end: DateTime<Utc>,
    ) -> std::result::Result<(), DbErr> {
        let msg = pb::SubscriptionChanged {
            user_id: user.to_string(),
            plan: plan.to_owned(),
            status: status as i32,
            current_period_end: Some(ts(end)),
        };
        let id = Uuid::now_v7().to_string();
        self.outbox.add(txn, &id, &user.to_string(), &msg).await
    }

    /// After a change's commit: the cached row goes (on every replica: the cache is shared),
    /// and its event goes out.
    async fn committed(&self, user: Uuid) {
        self.forget(user).await;
        self.outbox.wake();
    }

    /// The outbox of this service's events (its relay runs in [`crate::build`]).
    pub fn outbox(&self) -> &Outbox {
        &self.outbox
    }

    /// Test and operator hook: moves a subscription's period end (to exercise renewal).
    pub async fn set_period_end(&self, user: Uuid, end: DateTime<Utc>) -> Result<()> {
        subscription::Entity::update_many()
            .col_expr(subscription::Column::PeriodEnd, Expr::value(end))
            .filter(subscription::Column::UserId.eq(user))
            .exec(&self.db)
            .await?;
        self.forget(user).await;
        Ok(())
    }
}
