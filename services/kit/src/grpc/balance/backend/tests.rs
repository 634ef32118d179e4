//! Ejection: failures in a row, longer each time, never the last backend.

use std::{
    sync::atomic::{AtomicUsize, Ordering},
    time::{Duration, Instant},
};

use tokio::sync::Notify;

use super::super::{EJECT_AFTER, EJECT_BASE, Shared};
use super::BackendState;

fn shared(backends: usize) -> Shared {
    Shared {
        service: "t".into(),
        target: "t".into(),
        resolve_every: Duration::from_secs(5),
        resolve_now: Notify::new(),
        backends: AtomicUsize::new(backends),
        ejected: AtomicUsize::new(0),
    }
}

fn state() -> BackendState {
    let noop = metrics::Counter::noop;
    BackendState::new("127.0.0.1:1".parse().unwrap(), noop(), noop())
}

#[test]
fn failures_in_a_row_eject_for_longer_each_time_but_never_the_last_backend() {
    let s = shared(2);
    let (a, b) = (state(), state());
    for _ in 0..EJECT_AFTER - 1 {
        a.failed(&s);
    }
    a.succeeded();
    a.failed(&s);
    assert!(a.ejected_until().is_none(), "a success breaks the streak");
    for _ in 0..EJECT_AFTER {
        a.failed(&s);
    }
    let first = a.ejected_until().expect("ejected") - Instant::now();
    assert!(first <= EJECT_BASE && first > EJECT_BASE / 2, "{first:?}");
    assert_eq!(s.ejected.load(Ordering::Acquire), 1);
    b.eject(&s);
    assert!(b.ejected_until().is_none(), "the last backend in stays in");
    a.readmit(&s);
    a.readmit(&s);
    assert_eq!(s.ejected.load(Ordering::Acquire), 0, "readmitted once");
    a.eject(&s);
    let second = a.ejected_until().unwrap() - Instant::now();
    assert!(second > EJECT_BASE, "longer the second time in a row: {second:?}");
    a.readmit(&s);
    for _ in 0..10 {
        a.eject(&s);
        a.readmit(&s);
    }
    a.eject(&s);
    let capped = a.ejected_until().unwrap() - Instant::now();
    assert!(capped <= s.resolve_every, "never past the resolve interval: {capped:?}");
}
