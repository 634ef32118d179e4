//! Usage over time, for charts: settled tokens and generations per period (newest first) and
//! per day of the current period in the reader's time zone, each by function. Read from the
//! usage rows and the settled holds (each names its function).

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDate, Utc};
use chrono_tz::Tz;
use uuid::Uuid;

use crate::{
    domain::{DayUsage, FunctionUsage, PeriodUsage, UsageHistory},
    error::{Result, SubscribeError},
    store::quota::{Charged, FunctionSum},
    subscriptions::Subscriptions,
};

/// Periods shown when the caller does not say.
pub const DEFAULT_PERIODS: u32 = 12;
/// Most periods one answer holds.
pub const MAX_PERIODS: u32 = 36;

impl Subscriptions {
    /// The user's usage history: `periods` periods (0 = [`DEFAULT_PERIODS`]), days counted in
    /// `time_zone` (an IANA name; empty = UTC).
    pub async fn usage_history(
        &self,
        user: Uuid,
        time_zone: &str,
        periods: u32,
    ) -> Result<UsageHistory> {
        let tz: Tz = match time_zone.trim() {
            "" => Tz::UTC,
            name => name.parse().map_err(|_| {
                SubscribeError::Invalid("time_zone", skillup_kit::invalid::time_zone("time_zone"))
            })?,
        };
        let periods = match periods {
            0 => DEFAULT_PERIODS,
            n if n <= MAX_PERIODS => n,
            _ => {
                return Err(SubscribeError::Invalid(
                    "periods",
                    skillup_kit::invalid::between("periods", 1, i64::from(MAX_PERIODS)),
                ));
            }
        };
        let cur = self.current(user).await?;
        let rows = self.quota.periods(user, u64::from(periods)).await?;
        let since = rows.iter().map(|r| r.period_start).min().unwrap_or(cur.period_start);
        let sums = self.quota.by_function(user, since.min(cur.period_start)).await?;
        let charged = self.quota.charged(user, cur.period_start).await?;

        // Newest first; the current period always, even before its first generation.
        let mut starts: Vec<DateTime<Utc>> = rows.iter().map(|r| r.period_start).collect();
        if !starts.contains(&cur.period_start) {
            starts.push(cur.period_start);
        }
        starts.sort_by(|a, b| b.cmp(a));
        starts.truncate(periods as usize);
        let mut out = Vec::with_capacity(starts.len());
        for (i, start) in starts.iter().enumerate() {
            let current = *start == cur.period_start;
            let row = rows.iter().find(|r| r.period_start == *start);
            let end = if current {
                cur.period_end
            } else {
                i.checked_sub(1).map_or(cur.period_start, |newer| starts[newer])
            };
            out.push(PeriodUsage {
                period_start: *start,
                period_end: end,
                tokens_used: row.map_or(0, |r| r.tokens_used.max(0) as u64),
                generations_used: row.map_or(0, |r| r.generations_used.max(0) as u32),
                by_function: functions(sums.iter().filter(|s| s.period_start == *start)),
                current,
            });
        }
        let today = Utc::now().with_timezone(&tz).date_naive();
        let first = cur.period_start.with_timezone(&tz).date_naive();
        let last = (cur.period_end - chrono::Duration::seconds(1)).with_timezone(&tz).date_naive();
        Ok(UsageHistory {
            time_zone: tz.name().to_owned(),
            periods: out,
            days: days(&charged, tz, first, today.min(last)),
        })
    }
}

/// Sums by function, most tokens first (then by name).
fn functions<'a>(sums: impl Iterator<Item = &'a FunctionSum>) -> Vec<FunctionUsage> {
    let mut by: BTreeMap<&str, (u64, u32)> = BTreeMap::new();
    for s in sums {
        let e = by.entry(s.function_id.as_str()).or_default();
        e.0 += s.tokens.max(0) as u64;
        e.1 += s.generations.max(0) as u32;
    }
    sorted(by)
}

fn sorted(by: BTreeMap<&str, (u64, u32)>) -> Vec<FunctionUsage> {
    let mut v: Vec<FunctionUsage> = by
        .into_iter()
        .map(|(f, (tokens, generations))| FunctionUsage {
            function: f.to_owned(),
            tokens,
            generations,
        })
        .collect();
    v.sort_by(|a, b| b.tokens.cmp(&a.tokens).then_with(|| a.function.cmp(&b.function)));
    v
}

/// Every day from `first` to `last` (zeros included), each generation counted on the day it
/// started in `tz`.
fn days(charged: &[Charged], tz: Tz, first: NaiveDate, last: NaiveDate) -> Vec<DayUsage> {
    let mut by_day: BTreeMap<NaiveDate, BTreeMap<&str, (u64, u32)>> = BTreeMap::new();
    for c in charged {
        let day = c.created_at.with_timezone(&tz).date_naive();
        let e = by_day.entry(day).or_default().entry(c.function_id.as_str()).or_default();
        e.0 += c.actual_tokens.max(0) as u64;
        e.1 += 1;
    }
    first
        .iter_days()
        .take_while(|d| *d <= last)
        .map(|date| {
            let by_function = by_day.remove(&date).map(sorted).unwrap_or_default();
            DayUsage {
                date,
                tokens: by_function.iter().map(|f| f.tokens).sum(),
                generations: by_function.iter().map(|f| f.generations).sum(),
                by_function,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    fn at(y: i32, m: u32, d: u32, h: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, m, d, h, 0, 0).unwrap()
    }

    #[test]
    fn days_are_counted_in_the_readers_time_zone_zeros_included() {
        let charged = [
            Charged {
                created_at: at(2026, 12, 1, 22),
                function_id: "quiz".into(),
                actual_tokens: 100,
            },
            Charged {
                created_at: at(2026, 12, 1, 10),
                function_id: "quiz".into(),
                actual_tokens: 50,
            },
            Charged {
                created_at: at(2026, 12, 1, 11),
                function_id: "article".into(),
                actual_tokens: 500,
            },
        ];
        let d = |s: &str| s.parse::<NaiveDate>().unwrap();
        // 22:00 UTC on Dec 1 is Dec 2 in Moscow (UTC+3).
        let moscow = days(&charged, chrono_tz::Europe::Moscow, d("2026-12-01"), d("2026-12-03"));
        let totals: Vec<(String, u64, u32)> =
            moscow.iter().map(|x| (x.date.to_string(), x.tokens, x.generations)).collect();
        assert_eq!(
            totals,
            [
                ("2026-12-01".into(), 550, 2),
                ("2026-12-02".into(), 100, 1),
                ("2026-12-03".into(), 0, 0)
            ]
        );
        assert_eq!(moscow[0].by_function[0].function, "article", "most tokens first");
        let utc = days(&charged, Tz::UTC, d("2026-12-01"), d("2026-12-01"));
        assert_eq!((utc.len(), utc[0].tokens, utc[0].generations), (1, 650, 3));
    }
}
