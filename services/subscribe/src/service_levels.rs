//! The plans' service levels: what each plan promises per calendar month (UTC) — queued work
//! starting within a time for 95 % of it, a share of generations succeeding — measured from
//! the holds of its subscribers' generations (each hold settles once, and says how its
//! generation ended and how long queued work waited), kept as a record once the month is
//! over, and, when a paid plan missed a promise, a credit of part of its price to each
//! subscriber who generated on it that month — once (the ledger's key is the plan, month and
//! user), whichever replicas close the month, and even after a crash half-way.

use std::time::{Duration, Instant};

use chrono::{DateTime, Datelike, Utc};

use crate::{
    domain::{ServiceLevel, ServiceRecord},
    error::Result,
    holds::MAX_HOLD_SECS,
    store::{entities::plan, entities::service_record, service::Measured},
    subscriptions::{Subscriptions, month_of},
};

/// A month is closed this long after it ends: every hold taken in it has settled or lapsed.
pub const CLOSE_AFTER: chrono::Duration = chrono::Duration::seconds(MAX_HOLD_SECS as i64 + 3_600);

/// How long the open months' measurements are kept in memory.
pub(crate) const LIVE_TTL: Duration = Duration::from_secs(15);

/// `YYYY-MM` of a month's start.
pub fn label(start: DateTime<Utc>) -> String {
    format!("{:04}-{:02}", start.year(), start.month())
}

/// The months from the one holding `now` back, `n` of them: (start, end).
fn months_back(now: DateTime<Utc>, n: u32) -> Vec<(DateTime<Utc>, DateTime<Utc>)> {
    let mut out = Vec::new();
    let mut at = now;
    for _ in 0..n {
        let (start, end) = month_of(at);
        out.push((start, end));
        at = start - chrono::Duration::seconds(1);
    }
    out
}

/// Successful share in basis points (rounded down, in the subscriber's favour; 10_000 when
/// nothing counted).
pub fn availability_bp(m: &Measured) -> u32 {
    if m.generations <= 0 {
        return 10_000;
    }
    ((m.generations - m.failed).max(0) * 10_000 / m.generations) as u32
}

/// Whether `m` keeps every promise of `level` (a promise nothing was measured for is kept).
pub fn met(level: &ServiceLevel, m: &Measured) -> bool {
    let start_ok = level.queue_start_p95_ms == 0
        || m.queued == 0
        || m.queue_p95_ms <= i64::from(level.queue_start_p95_ms);
    let available_ok = level.availability_bp == 0 || availability_bp(m) >= level.availability_bp;
    start_ok && available_ok
}

/// The credit a subscriber of `p` gets for a missed month (`None`: none is due — free, no
/// credit promised, or priced in another currency than the one sold in).
pub fn credit_of(p: &plan::Model, selling: &str) -> Option<i64> {
    let percent = i64::from(p.sla_credit_percent.clamp(0, 100));
    (p.price_minor > 0 && percent > 0 && p.currency == selling)
        .then(|| (p.price_minor * percent / 100).max(1))
}

fn record_of(p: &plan::Model, month: &str, m: &Measured, closed: bool) -> ServiceRecord {
    let promised = ServiceLevel::from(p);
    ServiceRecord {
        plan: p.id.clone(),
        month: month.to_owned(),
        generations: m.generations.max(0) as u64,
        failed: m.failed.max(0) as u64,
        availability_bp: availability_bp(m),
        queued: m.queued.max(0) as u64,
        queue_start_p95_ms: m.queue_p95_ms.max(0) as u64,
        met: met(&promised, m),
        promised,
        closed,
        credits: 0,
    }
}

impl From<&service_record::Model> for ServiceRecord {
    fn from(r: &service_record::Model) -> Self {
        let terms: Option<plan::Model> = serde_json::from_str(&r.terms).ok();
        let m = Measured {
            generations: r.generations,
            failed: r.failed,
            queued: r.queued,
            queue_p95_ms: r.queue_p95_ms,
        };
        ServiceRecord {
            plan: r.plan_id.clone(),
            month: r.month.clone(),
            generations: r.generations.max(0) as u64,
            failed: r.failed.max(0) as u64,
            availability_bp: availability_bp(&m),
            queued: r.queued.max(0) as u64,
            queue_start_p95_ms: r.queue_p95_ms.max(0) as u64,
            promised: terms.as_ref().map(ServiceLevel::from).unwrap_or_default(),
            met: r.met,
            closed: true,
            credits: r.credits.max(0) as u32,
        }
    }
}

impl Subscriptions {
    /// The last `months` months' records (the current one included), newest first, each
    /// month's plans cheapest first; plans that promise nothing are left out. Closed months
    /// come from their records; open ones (the current month, and the last one until it is
    /// closed) are measured now (kept [`LIVE_TTL`]); months past closing without a record
    /// (before the platform measured) are left out.
    pub async fn service_records(
        &self,
        months: u32,
        now: DateTime<Utc>,
    ) -> Result<Vec<ServiceRecord>> {
        let months = months.clamp(1, 24);
        if let Some((at, records)) = self.live.lock().expect("live records").get(&months)
            && at.elapsed() < LIVE_TTL
        {
            return Ok(records.clone());
        }
        let spans = months_back(now, months);
        let labels: Vec<String> = spans.iter().map(|(s, _)| label(*s)).collect();
        let closed = self.service.records(&labels).await?;
        let plans = self.all_plans().await?;
        let mut out = Vec::new();
        for (start, end) in spans {
            let month = label(start);
            for p in plans.iter().filter(|p| ServiceLevel::from(*p).promises()) {
                match closed.iter().find(|r| r.plan_id == p.id && r.month == month) {
                    Some(r) => out.push(ServiceRecord::from(r)),
                    // A month that should be closed and is not was before the platform
                    // measured (or before the plan promised anything): nothing to show.
                    None if now >= end + CLOSE_AFTER => {}
                    None => {
                        let m = self.service.measure(&p.id, start, end).await?;
                        out.push(record_of(p, &month, &m, false));
                    }
                }
            }
        }
        self.live.lock().expect("live records").insert(months, (Instant::now(), out.clone()));
        Ok(out)
    }

    /// The current month's measurements as metrics, per plan.
    pub async fn report_service_levels(&self, now: DateTime<Utc>) -> Result<()> {
        for r in self.service_records(1, now).await? {
            let plan = r.plan.clone();
            metrics::gauge!("skillup_plan_availability_ratio", "plan" => plan.clone())
                .set(f64::from(r.availability_bp) / 10_000.0);
            metrics::gauge!("skillup_plan_queue_start_p95_seconds", "plan" => plan.clone())
                .set(r.queue_start_p95_ms as f64 / 1_000.0);
            metrics::gauge!("skillup_plan_generations", "plan" => plan).set(r.generations as f64);
        }
        Ok(())
    }

    /// Closes the month that ended at least [`CLOSE_AFTER`] before `now`, unless this replica
    /// closed it already.
    pub async fn close_due(&self, now: DateTime<Utc>) -> Result<()> {
        let (open, _) = month_of(now - CLOSE_AFTER);
        let (due, _) = month_of(open - chrono::Duration::seconds(1));
        if self.closed_through.lock().expect("closed month").as_deref() == Some(&label(due)) {
            return Ok(());
        }
        self.close_month(due).await?;
        *self.closed_through.lock().expect("closed month") = Some(label(due));
        Ok(())
    }

    /// Closes the month holding `at` for every plan that promises a service level: its record
    /// (the first replica's stands), then — when a paid plan missed — the credits, each once.
    pub async fn close_month(&self, at: DateTime<Utc>) -> Result<()> {
        let (start, end) = month_of(at);
        let month = label(start);
        for p in self.all_plans().await?.iter() {
            if !ServiceLevel::from(p).promises() {
                continue;
            }
            let record = match self.service.record(&p.id, &month).await? {
                Some(r) => r,
                None => {
                    let m = self.service.measure(&p.id, start, end).await?;
                    let met = met(&ServiceLevel::from(p), &m);
                    let owed = !met && m.generations > 0 && credit_of(p, &self.selling).is_some();
                    self.service
                        .close(service_record::Model {
                            plan_id: p.id.clone(),
                            month: month.clone(),
                            generations: m.generations,
                            failed: m.failed,
                            queued: m.queued,
                            queue_p95_ms: m.queue_p95_ms,
                            availability_bp: availability_bp(&m) as i32,
                            terms: serde_json::to_string(p).unwrap_or_default(),
                            met,
                            credits: 0,
                            credits_done: !owed,
                            closed_at: Utc::now(),
                        })
                        .await?;
                    if !met {
                        tracing::warn!(plan = %p.id, %month, generations = m.generations, failed = m.failed, queue_p95_ms = m.queue_p95_ms, "a plan missed its service level");
                    }
                    // Another replica's record may have stood: go on from the stored one.
                    match self.service.record(&p.id, &month).await? {
                        Some(r) => r,
                        None => continue,
                    }
                }
            };
            if !record.credits_done {
                self.issue_credits(&record, start, end).await?;
            }
        }
        self.live.lock().expect("live records").clear();
        Ok(())
    }

    /// Credits every subscriber who generated on a missed record's plan in its month, each
    /// under the key of the plan, month and user (so a retry or a second replica issues
    /// nothing more), then marks the record done.
    async fn issue_credits(
        &self,
        r: &service_record::Model,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
    ) -> Result<()> {
        let Ok(terms) = serde_json::from_str::<plan::Model>(&r.terms) else {
            tracing::error!(plan = %r.plan_id, month = %r.month, "a service record without its terms: no credits");
            return Ok(());
        };
        let users = self.service.users(&r.plan_id, start, end).await?;
        if let Some(amount) = credit_of(&terms, &self.selling) {
            let why = format!(
                "service credit: the {} plan missed its service level in {}",
                terms.title.chars().take(120).collect::<String>(),
                r.month
            );
            for user in &users {
                let key = format!("sla:{}:{}:{user}", r.plan_id, r.month);
                self.billing.credit(*user, amount, &terms.currency, &key, &why).await?;
            }
            metrics::counter!("skillup_plan_credits_total", "plan" => r.plan_id.clone())
                .increment(users.len() as u64);
            tracing::info!(plan = %r.plan_id, month = %r.month, users = users.len(), amount, "service credits issued");
        }
        self.service.credited(&r.plan_id, &r.month, users.len() as i32).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn measured(generations: i64, failed: i64, queued: i64, p95: i64) -> Measured {
        Measured { generations, failed, queued, queue_p95_ms: p95 }
    }

    #[test]
    fn a_month_keeps_its_promise_only_when_both_hold() {
        let level =
            ServiceLevel { queue_start_p95_ms: 60_000, availability_bp: 9_900, credit_percent: 10 };
        assert!(met(&level, &measured(0, 0, 0, 0)), "nothing measured breaks nothing");
        assert!(met(&level, &measured(100, 1, 50, 60_000)), "99.00 % and exactly the limit");
        assert!(!met(&level, &measured(100, 2, 50, 1_000)), "98 % < 99 %");
        assert!(!met(&level, &measured(100, 0, 50, 60_001)), "one ms late");
        assert_eq!(availability_bp(&measured(3, 1, 0, 0)), 6_666, "rounded down");
        assert_eq!(availability_bp(&measured(0, 0, 0, 0)), 10_000);
    }

    #[test]
    fn months_are_labelled_and_counted_back_across_a_year() {
        let now = DateTime::parse_from_rfc3339("2027-01-15T10:00:00Z").unwrap().to_utc();
        let labels: Vec<String> = months_back(now, 3).iter().map(|(s, _)| label(*s)).collect();
        assert_eq!(labels, ["2027-01", "2026-12", "2026-11"]);
    }
}
