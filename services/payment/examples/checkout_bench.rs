//! Paying in, measured (issue 21's numbers), on the real PostgreSQL against the Stripe stand-in
//! on loopback. Prints one JSON line per round:
//!
//! - `create`: `Checkouts::create` (the row, the provider call, the provider's id recorded)
//!   beside the anchor measured in the same round — the same Stripe request sent straight to
//!   the stand-in by a bare client; the overhead is the difference of the medians.
//! - `webhooks`: signed `checkout.session.completed` events delivered to `Checkouts::notify` by
//!   32 concurrent deliverers: every event once (each a credit), then every one again (each a
//!   duplicate): deliveries per second of each pass, the signature checked every time and each
//!   checkout credited exactly once (checked, and the ledger's audit at the end).
//!
//! Usage: `cargo run --release -p skillup-payment --example checkout_bench -- [rounds] [n]`

#![allow(clippy::print_stdout)] // the report is this tool's output

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use futures::{StreamExt, stream};
use skillup_payment::{
    Ledger, PaymentConfig, SandboxProvider, checkout::Request, config::ProviderKind,
    domain::IdempotencyKey, providers::http::Headers,
};
use skillup_testkit::{TestInfra, providers::stripe::StripeStandIn};

const WHSEC: &str = "whsec_bench";

fn median(mut v: Vec<Duration>) -> f64 {
    v.sort();
    v[v.len() / 2].as_secs_f64() * 1e3
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let rounds: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(3);
    let n: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(2000);
    let t = TestInfra::real().await;
    skillup_payment::migrate(&t.infra.db).await.unwrap();
    let stripe = StripeStandIn::start("sk_bench", WHSEC).await;
    let mut config = PaymentConfig { provider: ProviderKind::Stripe, ..Default::default() };
    config.stripe.api_base = stripe.base_url().to_owned();
    config.stripe.secret_key = Some("sk_bench".to_owned().into());
    config.stripe.webhook_secrets = Some(WHSEC.to_owned().into());
    let ledger = Ledger::new(t.infra.db.clone(), t.infra.bus.clone(), Arc::new(SandboxProvider));
    let checkouts = skillup_payment::checkouts(&ledger, &config, "https://skillup.bench").unwrap();
    let bare = reqwest::Client::new();
    let url = format!("{}/v1/checkout/sessions", stripe.base_url());

    for round in 0..rounds {
        // Sequential, alternating the two so they see the same machine.
        let (mut ours, mut anchor) = (Vec::new(), Vec::new());
        // Each checkout its own person, as webhooks come (one wallet for all would serialise
        // every credit on its row: see the `hot` scenario of payment_load for that case).
        let mut made = Vec::new();
        for i in 0..n {
            let started = Instant::now();
            let form = [
                ("mode", "payment"),
                ("line_items[0][quantity]", "1"),
                ("line_items[0][price_data][currency]", "usd"),
                ("line_items[0][price_data][unit_amount]", "1000"),
                ("line_items[0][price_data][product_data][name]", "bench"),
                ("success_url", "https://skillup.bench/billing"),
            ];
            let res = bare
                .post(&url)
                .bearer_auth("sk_bench")
                .header("Idempotency-Key", format!("anchor-{round}-{i}"))
                .form(&form)
                .send()
                .await
                .unwrap();
            assert!(res.status().is_success());
            res.bytes().await.unwrap();
            anchor.push(started.elapsed());
            let started = Instant::now();
            let key = IdempotencyKey::parse(&format!("bench-{round}-{i}")).unwrap();
            let asked = Request { amount_minor: 1000, ..Default::default() };
            let (c, _) = checkouts.create(uuid::Uuid::now_v7(), asked, key).await.unwrap();
            ours.push(started.elapsed());
            made.push(c);
        }
        let (ours_p50, anchor_p50) = (median(ours), median(anchor));
        println!(
            "{}",
            serde_json::json!({"round": round, "scenario": "create", "n": n,
                "checkout_p50_ms": ours_p50, "stand_in_p50_ms": anchor_p50,
                "overhead_p50_ms": ours_p50 - anchor_p50})
        );

        // Every checkout paid; each event delivered twice, 32 at a time.
        let events: Vec<(Vec<u8>, String)> =
            made.iter().map(|c| stripe.pay(c.provider_payment_id.as_deref().unwrap())).collect();
        // First every event once (each a credit), then every one again (each a duplicate).
        let mut rates = Vec::new();
        let mut outcomes: Vec<&'static str> = Vec::new();
        for pass in [&events, &events] {
            let started = Instant::now();
            let got: Vec<&'static str> = stream::iter(pass.iter())
                .map(|(body, sig)| {
                    let checkouts = checkouts.clone();
                    async move {
                        let headers = Headers::new([("stripe-signature", sig.as_str())]);
                        checkouts.notify("stripe", &headers, body).await.unwrap()
                    }
                })
                .buffer_unordered(32)
                .collect()
                .await;
            rates.push(got.len() as f64 / started.elapsed().as_secs_f64());
            outcomes.extend(got);
        }
        let credited = outcomes.iter().filter(|o| **o == "credited").count();
        assert_eq!(credited, n, "every checkout credited exactly once");
        for c in made.iter().step_by(97) {
            assert_eq!(ledger.balance(c.user_id, None).await.unwrap().available_minor, 1000);
        }
        println!(
            "{}",
            serde_json::json!({"round": round, "scenario": "webhooks", "deliveries": outcomes.len(),
                "credited": credited, "first_per_sec": rates[0], "duplicate_per_sec": rates[1]})
        );
    }
    assert_eq!(ledger.audit().await.unwrap(), Vec::<String>::new());
}
