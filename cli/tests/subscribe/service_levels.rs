//! Issue 21's plan service levels: each plan's promise in the plans API, measured from the
//! holds of its subscribers' generations (queued work's 202 → start, the platform's failures),
//! a record per month, and — when a paid plan missed — a credit of part of its price to each
//! subscriber who generated on it, once, however many replicas close the month.

use skillup_subscribe::domain::ServiceLevel;

use super::*;

/// A generation as the ai service settles it: `Ok(wait)` completed (queued work: `Some`
/// wait), `Err(true)` failed by the platform, `Err(false)` cancelled by its owner.
async fn generation(h: &Harness, user: Uuid, ending: Result<Option<u64>, bool>) {
    let mut c = h.client.clone();
    let hold = c
        .reserve_quota(pb::ReserveQuotaRequest {
            user_id: user.to_string(),
            function_id: "quiz".into(),
            tokens: 100,
            idempotency_key: String::new(),
            ttl_seconds: 60,
        })
        .await
        .unwrap()
        .into_inner()
        .hold_id;
    let wait = |s: u64| prost_types::Duration { seconds: s as i64, nanos: 0 };
    match ending {
        Ok(waited) => {
            let req = pb::CommitQuotaRequest {
                hold_id: hold,
                actual_tokens: 80,
                queue_wait: waited.map(wait),
            };
            c.commit_quota(req).await.unwrap();
        }
        Err(failed) => {
            let reason =
                if failed { pb::ReleaseReason::Failed } else { pb::ReleaseReason::Cancelled };
            let req =
                pb::ReleaseQuotaRequest { hold_id: hold, reason: reason as i32, queue_wait: None };
            c.release_quota(req).await.unwrap();
        }
    }
}

pub(crate) async fn a_missed_month_credits_each_subscriber_of_the_plan_once(kind: Kind) {
    let mut h = harness(kind).await;
    let month_of_the_test = chrono::Utc::now();
    // The promises are in the plans API.
    let plans = h.client.list_plans(pb::ListPlansRequest {}).await.unwrap().into_inner();
    let level = |id: &str| plans.plans.iter().find(|p| p.id == id).unwrap().service_level;
    assert_eq!(level("free"), Some(pb::ServiceLevel::default()), "free promises nothing");
    let basic =
        pb::ServiceLevel { queue_start_p95_ms: 60_000, availability_bp: 9_900, credit_percent: 10 };
    assert_eq!(level("basic"), Some(basic));
    assert_eq!(level("premium").unwrap().credit_percent, 25);

    let (ann, bob, cy, dan) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
    for (u, plan_id) in [(ann, "basic"), (bob, "basic"), (cy, "premium")] {
        fund(&mut h, u, 5_000).await;
        h.client.subscribe(as_user(&h, u, plan(plan_id))).await.unwrap();
    }
    // Basic: 20 queued generations, 18 started within a second and 2 after two minutes — the
    // 95th percentile (the 19th of 20) is two minutes, over the minute promised.
    for i in 0..20u64 {
        let user = if i % 2 == 0 { ann } else { bob };
        generation(&h, user, Ok(Some(if i < 18 { 1 } else { 120 }))).await;
    }
    // Premium: three inline generations and one the platform failed (75 % < 99.5 %); a
    // cancelled one does not count.
    for ending in [Ok(None), Ok(None), Ok(None), Err(true), Err(false)] {
        generation(&h, cy, ending).await;
    }
    // Free promises nothing: its generations make no record.
    generation(&h, dan, Ok(Some(500))).await;

    // This month so far, through the public listing.
    let listed = h
        .client
        .list_service_records(pb::ListServiceRecordsRequest { months: 1 })
        .await
        .unwrap()
        .into_inner()
        .records;
    let row = |plan: &str| listed.iter().find(|r| r.plan == plan).cloned().unwrap();
    assert!(listed.iter().all(|r| r.plan != "free"), "{listed:?}");
    let b = row("basic");
    assert_eq!((b.generations, b.failed, b.queued, b.queue_start_p95_ms), (20, 0, 20, 120_000));
    assert_eq!((b.availability_bp, b.met, b.closed), (10_000, false, false));
    let p = row("premium");
    assert_eq!(
        (p.generations, p.failed, p.queued, p.availability_bp, p.met),
        (4, 1, 0, 7_500, false)
    );
    // The months before, never closed (the platform did not measure then), are left out.
    let mid_month = month_start(month_of_the_test) + chrono::Duration::days(15);
    let three = replica(&h).service_records(3, mid_month).await.unwrap();
    assert_eq!(three.len(), 2, "{three:?}");
    let over = h.client.list_service_records(pb::ListServiceRecordsRequest { months: 25 }).await;
    assert_eq!(code_of(&over.unwrap_err()), ErrorCode::InvalidArgument);

    // The month closes on two replicas at once — one by its periodic job's rule (the day after
    // the month ended), one asked directly: each subscriber is credited once.
    let balances =
        [balance(&mut h, ann).await, balance(&mut h, bob).await, balance(&mut h, cy).await];
    let (one, two) = (replica(&h), replica(&h));
    let (start, end) = (month_start(month_of_the_test), month_end(month_of_the_test));
    let after = end + skillup_subscribe::service_levels::CLOSE_AFTER + chrono::Duration::seconds(1);
    let (a, b2) = tokio::join!(one.close_due(after), two.close_month(start));
    a.unwrap();
    b2.unwrap();
    replica(&h).close_month(start).await.unwrap();
    assert_eq!(balance(&mut h, ann).await, balances[0] + 99, "10 % of 9.90");
    assert_eq!(balance(&mut h, bob).await, balances[1] + 99);
    assert_eq!(balance(&mut h, cy).await, balances[2] + 747, "25 % of 29.90");
    // The person sees it in their ledger with its reason.
    let req = as_user(&h, ann, paypb::ListTransactionsRequest::default());
    let txs = h.payments.list_transactions(req).await.unwrap().into_inner().transactions;
    let credit = txs
        .iter()
        .find(|t| t.kind == paypb::TransactionKind::ServiceCredit as i32)
        .expect("a service credit");
    assert!(credit.description.contains("the Basic plan missed its service level"), "{credit:?}");

    // The record is final and says how many were credited.
    let closed = replica(&h).service_records(1, month_of_the_test).await.unwrap();
    let b = closed.iter().find(|r| r.plan == "basic").unwrap();
    assert!(b.closed && !b.met, "{b:?}");
    assert_eq!((b.credits, b.queue_start_p95_ms), (2, 120_000));
    assert_eq!(
        b.promised,
        ServiceLevel { queue_start_p95_ms: 60_000, availability_bp: 9_900, credit_percent: 10 }
    );
    assert_eq!(closed.iter().find(|r| r.plan == "premium").unwrap().credits, 1);
}

fn month_start(t: chrono::DateTime<chrono::Utc>) -> chrono::DateTime<chrono::Utc> {
    use chrono::{Datelike, TimeZone};
    chrono::Utc.with_ymd_and_hms(t.year(), t.month(), 1, 0, 0, 0).unwrap()
}

fn month_end(t: chrono::DateTime<chrono::Utc>) -> chrono::DateTime<chrono::Utc> {
    month_start(month_start(t) + chrono::Duration::days(32))
}
