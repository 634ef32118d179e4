//! Issue 21's one selling currency as plans see it: a deployment that starts selling in
//! another currency moves the default plans onto their prices in it, leaves a plan an operator
//! priced unsold until they price it again, and never converts money.

use skillup_kit::audit::Actor;
use skillup_subscribe::error::SubscribeError;

use super::*;

pub(crate) async fn a_new_selling_currency_reprices_the_default_plans_and_no_others(kind: Kind) {
    let mut h = harness(kind).await;
    let mut audit = skillup_kit::events::subscribe::<skillup_proto::common::v1::AuditEntry>(
        &h.t.infra.bus,
        &format!("audit-currency-{}", Uuid::now_v7()),
    )
    .await
    .unwrap();
    // The operator priced basic themselves (in dollars, as this deployment sells).
    let all = h.client.admin_list_plans(as_admin(&h, pb::AdminListPlansRequest {})).await;
    let basic = all.unwrap().into_inner().plans.into_iter().find(|p| p.id == "basic").unwrap();
    let price =
        Some(skillup_proto::common::v1::Money { amount_minor: 1_000, currency: "USD".into() });
    let save = pb::SavePlanRequest {
        plan: Some(pb::Plan { price, ..basic }),
        reason: "pricing review".into(),
        plan_id: "basic".into(),
    };
    h.client.update_plan(as_admin(&h, save)).await.unwrap();

    // The deployment now sells in roubles: the default plans move, the operator's does not.
    let rub = replica(&h).selling_in("RUB");
    rub.adopt_currency().await.unwrap();
    let sold: Vec<(String, i64, String)> = rub
        .plans()
        .await
        .unwrap()
        .into_iter()
        .map(|p| (p.id, p.price.minor, p.price.currency))
        .collect();
    assert_eq!(
        sold,
        [("free".into(), 0, "RUB".into()), ("premium".into(), 249_000, "RUB".into())],
        "basic, priced by an operator in dollars, is not sold in roubles"
    );
    let basic = rub.admin_plans().await.unwrap().into_iter().find(|p| p.id == "basic").unwrap();
    assert_eq!((basic.price_minor, basic.currency.as_str()), (1_000, "USD"), "never converted");
    match rub.subscribe(Uuid::now_v7(), "basic", "").await {
        Err(SubscribeError::NotFound(why)) => assert!(why.contains("RUB"), "{why}"),
        other => panic!("{other:?}"),
    }
    // An operator prices plans only in the selling currency; then basic is sold again.
    let operator = Actor::cli("root");
    match rub.update_plan(&operator, "basic", basic.clone(), "reprice").await {
        Err(SubscribeError::Invalid("plan.price.currency", why)) => {
            assert!(why.contains("RUB"), "{why}")
        }
        other => panic!("{other:?}"),
    }
    let in_roubles = skillup_subscribe::store::entities::plan::Model {
        price_minor: 59_000,
        currency: "RUB".into(),
        ..basic
    };
    rub.update_plan(&operator, "basic", in_roubles, "reprice").await.unwrap();
    assert!(rub.plans().await.unwrap().iter().any(|p| p.id == "basic"));
    // Starting again (or on another replica) changes nothing more.
    replica(&h).selling_in("RUB").adopt_currency().await.unwrap();

    // Audited: the operator's edit, the platform's two moves, the operator's repricing.
    let mut seen = Vec::new();
    while seen.len() < 4 {
        let d = tokio::time::timeout(Duration::from_secs(10), audit.next()).await.unwrap().unwrap();
        let (_, e) = skillup_kit::events::decode::<skillup_proto::common::v1::AuditEntry>(
            &d.message.payload,
        )
        .unwrap();
        d.ack().await.unwrap();
        let after: serde_json::Value = serde_json::from_str(&e.after).unwrap();
        seen.push((e.actor, e.target_id, after["price_minor"].as_i64().unwrap()));
    }
    seen.sort();
    let system = "system:selling-currency".to_owned();
    assert_eq!(
        seen,
        [
            (String::new(), "basic".into(), 1_000),
            ("cli:root".into(), "basic".into(), 59_000),
            (system.clone(), "free".into(), 0),
            (system, "premium".into(), 249_000),
        ]
    );
    let quiet = tokio::time::timeout(Duration::from_millis(500), audit.next()).await;
    assert!(quiet.is_err(), "a second start wrote nothing");
}
