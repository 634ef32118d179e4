//! What the asymmetric identity assertion costs (issue 24: Ed25519, so services hold only the
//! public key). Times, per assertion the edge mints: signing at the edge and verifying at a
//! service, for the Ed25519 form in use, beside the HMAC-SHA256 form it replaced (same claims,
//! same encoding, same run) as the anchor. A request through `/api/generate` or `/v1` is signed
//! once per upstream call and verified at every service it reaches (ai, then subscribe and
//! prompt with the forwarded assertion); a process verifies an assertion's signature once and
//! remembers it, so a repeat (the forwarded assertion at the next call) costs a lookup.
//!
//! `cargo run --release -p skillup-kit --example identity_cost -- [rounds] [operations per round]`

#![allow(clippy::print_stdout)] // the report is this tool's output

use std::{hint::black_box, time::Instant};

use aws_lc_rs::hmac;
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use skillup_kit::identity::{Caller, IdentityKey, now_secs};

fn caller() -> Caller {
    Caller {
        user_id: uuid::Uuid::now_v7().to_string(),
        scopes: vec!["user".into()],
        tier: "premium".into(),
        email_verified: true,
        request_id: uuid::Uuid::now_v7().to_string(),
        exp: now_secs() + 60,
        jti: uuid::Uuid::now_v7().to_string(),
        sid: uuid::Uuid::now_v7().to_string(),
        ver: "17".into(),
        token_exp: 1_900_000_000,
        ip: "203.0.113.7".into(),
        locale: "ru".into(),
        ..Default::default()
    }
}

/// Microseconds per operation of `f` run `n` times.
fn per_op(n: usize, mut f: impl FnMut()) -> f64 {
    let start = Instant::now();
    for _ in 0..n {
        f();
    }
    start.elapsed().as_secs_f64() * 1e6 / n as f64
}

fn median(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(f64::total_cmp);
    (v[v.len() / 2], v[0], v[v.len() - 1])
}

fn main() {
    let mut args = std::env::args().skip(1);
    let rounds: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(5);
    let n: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(20_000);
    let key = IdentityKey::random();
    let verifier = key.verifier();
    let id = caller();
    let assertion = key.sign(&id);
    // The replaced form: the same protobuf claims under HMAC-SHA256.
    let mac = hmac::Key::new(hmac::HMAC_SHA256, &[7u8; 32]);
    let body = assertion.rsplit_once('.').map(|(b, _)| b.replacen("v3.", "v2.", 1)).unwrap();
    let hmac_sign = || {
        let tag = hmac::sign(&mac, body.as_bytes());
        black_box(format!("{body}.{}", URL_SAFE_NO_PAD.encode(tag.as_ref())));
    };
    let tagged = format!("{body}.{}", URL_SAFE_NO_PAD.encode(hmac::sign(&mac, body.as_bytes())));
    let hmac_verify = || {
        let (b, t) = tagged.rsplit_once('.').unwrap();
        let t = URL_SAFE_NO_PAD.decode(t).unwrap();
        black_box(hmac::verify(&mac, b.as_bytes(), &t).is_ok());
        let claims = URL_SAFE_NO_PAD.decode(&b[3..]).unwrap();
        black_box(claims);
    };
    let now = now_secs();
    let (mut sign, mut verify, mut repeat, mut old_sign, mut old_verify) =
        (vec![], vec![], vec![], vec![], vec![]);
    for _ in 0..rounds {
        sign.push(per_op(n, || {
            black_box(key.sign(black_box(&id)));
        }));
        verify.push(per_op(n, || {
            black_box(verifier.verify_signature(black_box(&assertion), now).unwrap());
        }));
        repeat.push(per_op(n, || {
            black_box(verifier.verify(black_box(&assertion), now).unwrap());
        }));
        old_sign.push(per_op(n, hmac_sign));
        old_verify.push(per_op(n, hmac_verify));
    }
    println!("{rounds} rounds of {n} operations; µs per operation, median (min–max)");
    for (name, v) in [
        ("Ed25519 sign (edge)", sign),
        ("Ed25519 verify, first sight (service)", verify),
        ("Ed25519 verify, a repeat (remembered)", repeat),
        ("HMAC sign (before)", old_sign),
        ("HMAC verify, no claims decode (before)", old_verify),
    ] {
        let (m, lo, hi) = median(v);
        println!("{name:<40} {m:>8.2} ({lo:.2}–{hi:.2})");
    }
    println!("assertion length: {} bytes", assertion.len());
}
