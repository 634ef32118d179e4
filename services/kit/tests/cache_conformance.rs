//! The cache port's behaviour, run against both adapters: the real Redis of this machine
//! (`REDIS_URL`) and the in-process cache. Each case is generated once per adapter.

use std::{sync::Arc, time::Duration};

use bytes::Bytes;
use skillup_kit::cache::{Expect, MemoryCache, SharedCache};
use skillup_testkit as testing;

async fn redis() -> SharedCache {
    Arc::new(testing::redis_cache().await)
}

async fn memory() -> SharedCache {
    Arc::new(MemoryCache::new())
}

macro_rules! conformance {
    ($($case:ident),* $(,)?) => {
        mod redis_adapter {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn $case() { super::$case(super::redis().await).await })*
        }
        mod memory_adapter {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn $case() { super::$case(super::memory().await).await })*
        }
    };
}

conformance!(
    get_set_delete,
    ttl_expiry,
    set_if_absent_only_once_under_concurrency,
    incr_is_atomic_under_concurrency,
    incr_starts_its_window_once,
    compare_and_set_has_one_winner,
    compare_and_set_can_delete,
    get_many_in_one_round_trip,
    delete_prefix_removes_one_owners_keys_only,
    take_spends_one_budget_under_concurrency,
    take_gives_a_unit_back_each_interval,
);

async fn delete_prefix_removes_one_owners_keys_only(c: SharedCache) {
    for i in 0..1_200 {
        c.set(&format!("res:u1:{i}"), Bytes::from_static(b"x"), None).await.unwrap();
    }
    c.set("res:u10:0", Bytes::from_static(b"other user"), None).await.unwrap();
    c.set("res:u2:0", Bytes::from_static(b"other user"), None).await.unwrap();
    // A glob character in a prefix is literal.
    c.set("res:u*:0", Bytes::from_static(b"starred"), None).await.unwrap();
    assert_eq!(c.delete_prefix("res:u1:").await.unwrap(), 1_200, "every page of the scan");
    assert_eq!(c.get("res:u1:7").await.unwrap(), None);
    assert!(c.get("res:u10:0").await.unwrap().is_some(), "a longer id is another owner");
    assert!(c.get("res:u2:0").await.unwrap().is_some());
    assert_eq!(c.delete_prefix("res:u*").await.unwrap(), 1, "only the literal key");
    assert!(c.get("res:u2:0").await.unwrap().is_some());
    assert_eq!(c.delete_prefix("res:nobody:").await.unwrap(), 0);
}

async fn get_set_delete(c: SharedCache) {
    assert_eq!(c.get("k").await.unwrap(), None);
    c.set("k", Bytes::from_static(b"v1"), None).await.unwrap();
    assert_eq!(c.get("k").await.unwrap(), Some(Bytes::from_static(b"v1")));
    assert_eq!(c.ttl("k").await.unwrap(), Some(None), "no TTL set");
    c.set("k", Bytes::from_static(b"v2"), None).await.unwrap();
    assert_eq!(c.get("k").await.unwrap(), Some(Bytes::from_static(b"v2")));
    assert!(c.delete("k").await.unwrap());
    assert!(!c.delete("k").await.unwrap(), "second delete finds nothing");
    assert_eq!(c.get("k").await.unwrap(), None);
    assert_eq!(c.ttl("k").await.unwrap(), None);
    c.ping().await.unwrap();
}

async fn ttl_expiry(c: SharedCache) {
    c.set("short", Bytes::from_static(b"x"), Some(Duration::from_millis(300))).await.unwrap();
    let left = c.ttl("short").await.unwrap().flatten().expect("has a TTL");
    assert!(left <= Duration::from_millis(300) && left > Duration::ZERO, "{left:?}");
    assert!(c.get("short").await.unwrap().is_some());
    tokio::time::sleep(Duration::from_millis(450)).await;
    assert_eq!(c.get("short").await.unwrap(), None, "expired");
    assert!(
        c.set_if_absent("short", Bytes::from_static(b"y"), None).await.unwrap(),
        "expired keys count as absent"
    );
}

async fn set_if_absent_only_once_under_concurrency(c: SharedCache) {
    let tasks: Vec<_> = (0..32)
        .map(|i| {
            let c = c.clone();
            tokio::spawn(async move {
                c.set_if_absent("lock", Bytes::from(format!("{i}")), Some(Duration::from_secs(5)))
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut winners = 0;
    for t in tasks {
        winners += t.await.unwrap() as u32;
    }
    assert_eq!(winners, 1);
}

async fn incr_is_atomic_under_concurrency(c: SharedCache) {
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let c = c.clone();
            tokio::spawn(async move {
                for _ in 0..25 {
                    c.incr("counter", 2, None).await.unwrap();
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(c.incr("counter", 0, None).await.unwrap(), 1000);
    assert_eq!(c.incr("counter", -1000, None).await.unwrap(), 0);
}

async fn incr_starts_its_window_once(c: SharedCache) {
    assert_eq!(c.incr("window", 1, Some(Duration::from_millis(400))).await.unwrap(), 1);
    tokio::time::sleep(Duration::from_millis(200)).await;
    // A later increment must not push the window's end out.
    assert_eq!(c.incr("window", 1, Some(Duration::from_millis(400))).await.unwrap(), 2);
    let left = c.ttl("window").await.unwrap().flatten().unwrap();
    assert!(left <= Duration::from_millis(220), "window kept its first deadline: {left:?}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        c.incr("window", 1, Some(Duration::from_millis(400))).await.unwrap(),
        1,
        "new window"
    );
}

async fn compare_and_set_has_one_winner(c: SharedCache) {
    c.set("state", Bytes::from_static(b"v0"), None).await.unwrap();
    let tasks: Vec<_> = (0..24)
        .map(|i| {
            let c = c.clone();
            tokio::spawn(async move {
                c.compare_and_set(
                    "state",
                    Expect::Value(Bytes::from_static(b"v0")),
                    Some(Bytes::from(format!("w{i}"))),
                    None,
                )
                .await
                .unwrap()
            })
        })
        .collect();
    let mut winners = 0;
    for t in tasks {
        winners += t.await.unwrap() as u32;
    }
    assert_eq!(winners, 1, "exactly one swap from v0");
    let now = c.get("state").await.unwrap().unwrap();
    assert!(now.starts_with(b"w"));
    assert!(
        !c.compare_and_set("state", Expect::Absent, Some(Bytes::from_static(b"x")), None)
            .await
            .unwrap()
    );
    assert!(
        c.compare_and_set(
            "fresh",
            Expect::Absent,
            Some(Bytes::from_static(b"x")),
            Some(Duration::from_secs(5))
        )
        .await
        .unwrap()
    );
    assert!(c.ttl("fresh").await.unwrap().flatten().is_some(), "TTL applied on swap");
}

async fn compare_and_set_can_delete(c: SharedCache) {
    c.set("del", Bytes::from_static(b"a"), None).await.unwrap();
    assert!(
        !c.compare_and_set("del", Expect::Value(Bytes::from_static(b"b")), None, None)
            .await
            .unwrap()
    );
    assert!(c.get("del").await.unwrap().is_some(), "a failed compare changes nothing");
    assert!(
        c.compare_and_set("del", Expect::Value(Bytes::from_static(b"a")), None, None)
            .await
            .unwrap()
    );
    assert_eq!(c.get("del").await.unwrap(), None);
}

async fn get_many_in_one_round_trip(c: SharedCache) {
    assert_eq!(c.get_many(&[]).await.unwrap(), Vec::<Option<Bytes>>::new());
    c.set("a", Bytes::from_static(b"1"), None).await.unwrap();
    c.set("c", Bytes::from_static(b"3"), Some(Duration::from_millis(100))).await.unwrap();
    let got = c.get_many(&["a", "b", "c"]).await.unwrap();
    assert_eq!(got, vec![Some(Bytes::from_static(b"1")), None, Some(Bytes::from_static(b"3"))]);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(c.get_many(&["c", "a"]).await.unwrap(), vec![None, Some(Bytes::from_static(b"1"))]);
}

/// A rate budget shared by every caller: exactly its burst is let through however many ask at
/// once, each told what is left, the refused when the next unit comes.
async fn take_spends_one_budget_under_concurrency(c: SharedCache) {
    let key = format!("t:take:{}", uuid::Uuid::now_v7());
    let hour = Duration::from_secs(3600);
    let tasks: Vec<_> = (0..100)
        .map(|_| {
            let (c, key) = (c.clone(), key.clone());
            tokio::spawn(async move { c.take(&key, hour, 50).await.unwrap() })
        })
        .collect();
    let mut left = Vec::new();
    for t in tasks {
        let taken = t.await.unwrap();
        if taken.allowed {
            left.push(taken.remaining);
        } else {
            assert_eq!(taken.remaining, 0);
            assert!(taken.wait > Duration::ZERO && taken.wait <= hour, "{:?}", taken.wait);
        }
    }
    left.sort_unstable();
    assert_eq!(left, (0..50).collect::<Vec<u32>>(), "50 let through, each told what is left");
    // The key lives until the budget would be full again, not for ever.
    let ttl = c.ttl(&key).await.unwrap().expect("kept").expect("with a TTL");
    assert!(ttl <= hour * 50 && ttl > hour * 49, "{ttl:?}");
}

async fn take_gives_a_unit_back_each_interval(c: SharedCache) {
    let key = format!("t:take:{}", uuid::Uuid::now_v7());
    let every = Duration::from_millis(200);
    assert!(c.take(&key, every, 2).await.unwrap().allowed);
    assert!(c.take(&key, every, 2).await.unwrap().allowed);
    let refused = c.take(&key, every, 2).await.unwrap();
    assert!(!refused.allowed);
    assert!(refused.wait <= every, "{:?}", refused.wait);
    tokio::time::sleep(refused.wait + Duration::from_millis(5)).await;
    assert!(c.take(&key, every, 2).await.unwrap().allowed, "a unit is back after the wait");
}
