//! A circuit breaker: one per upstream service at the edge, one per text provider in the ai
//! service. Closed: calls flow, failures are counted (a streak, and a rate over the last
//! `window` calls). Open: calls fail fast until `open_ms` passes. Half-open:
//! `half_open_probes` calls go through; if all succeed it closes, one failure opens it again.
//! Only failures that say the target is in trouble should be recorded as failures (unavailable,
//! timed out, crashed); a caller's mistake is a success here — the caller decides which is which.
//!
//! Hand-written rather than a crate: the state machine is small, and what counts as a failure
//! belongs to each caller (gRPC codes at the edge, HTTP statuses for providers).

use std::{
    collections::VecDeque,
    sync::Mutex,
    time::{Duration, Instant},
};

use crate::config::BreakerConfig;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Closed,
    Open,
    HalfOpen,
}

#[derive(Debug)]
struct Inner {
    state: State,
    streak: u32,
    recent: VecDeque<bool>,
    opened_at: Instant,
    probes_out: u32,
    probes_ok: u32,
}

#[derive(Debug)]
pub struct Breaker {
    name: String,
    cfg: BreakerConfig,
    inner: Mutex<Inner>,
}

/// Leave to make one call; report how it went with [`Permit::record`].
#[must_use]
#[derive(Debug)]
pub struct Permit<'a> {
    breaker: &'a Breaker,
    probe: bool,
    done: bool,
}

impl Breaker {
    pub fn new(name: impl Into<String>, cfg: BreakerConfig) -> Self {
        Self {
            name: name.into(),
            cfg,
            inner: Mutex::new(Inner {
                state: State::Closed,
                streak: 0,
                recent: VecDeque::new(),
                opened_at: Instant::now(),
                probes_out: 0,
                probes_ok: 0,
            }),
        }
    }

    pub fn state(&self) -> State {
        self.inner.lock().expect("breaker lock").state
    }

    fn open_for(&self) -> Duration {
        Duration::from_millis(self.cfg.open_ms)
    }

    /// A permit, or how long until the breaker lets calls through again.
    pub fn try_acquire(&self) -> Result<Permit<'_>, Duration> {
        let mut s = self.inner.lock().expect("breaker lock");
        match s.state {
            State::Closed => Ok(Permit { breaker: self, probe: false, done: false }),
            State::Open => {
                let elapsed = s.opened_at.elapsed();
                if elapsed < self.open_for() {
                    return Err(self.open_for() - elapsed);
                }
                s.state = State::HalfOpen;
                s.probes_out = 1;
                s.probes_ok = 0;
                self.gauge(State::HalfOpen);
                tracing::info!(upstream = %self.name, "circuit half-open: probing");
                Ok(Permit { breaker: self, probe: true, done: false })
            }
            State::HalfOpen => {
                if s.probes_out + s.probes_ok >= self.cfg.half_open_probes.max(1) {
                    return Err(Duration::from_millis(200));
                }
                s.probes_out += 1;
                Ok(Permit { breaker: self, probe: true, done: false })
            }
        }
    }

    fn record(&self, probe: bool, ok: bool) {
        let mut s = self.inner.lock().expect("breaker lock");
        if probe {
            if s.state != State::HalfOpen {
                return;
            }
            s.probes_out = s.probes_out.saturating_sub(1);
            if !ok {
                self.trip(&mut s, "a probe failed");
                return;
            }
            s.probes_ok += 1;
            if s.probes_ok >= self.cfg.half_open_probes.max(1) {
                s.state = State::Closed;
                s.streak = 0;
                s.recent.clear();
                self.gauge(State::Closed);
                tracing::info!(upstream = %self.name, "circuit closed");
            }
            return;
        }
        if s.state != State::Closed {
            return;
        }
        s.streak = if ok { 0 } else { s.streak + 1 };
        let window = self.cfg.window.max(1) as usize;
        s.recent.push_back(ok);
        while s.recent.len() > window {
            s.recent.pop_front();
        }
        if self.cfg.consecutive_failures > 0 && s.streak >= self.cfg.consecutive_failures {
            self.trip(&mut s, "consecutive failures");
            return;
        }
        if self.cfg.failure_rate_percent > 0 && s.recent.len() >= window {
            let failed = s.recent.iter().filter(|ok| !**ok).count();
            if failed * 100 >= window * self.cfg.failure_rate_percent as usize {
                self.trip(&mut s, "failure rate");
            }
        }
    }

    fn release_probe(&self) {
        let mut s = self.inner.lock().expect("breaker lock");
        if s.state == State::HalfOpen {
            s.probes_out = s.probes_out.saturating_sub(1);
        }
    }

    fn trip(&self, s: &mut Inner, why: &str) {
        s.state = State::Open;
        s.opened_at = Instant::now();
        s.streak = 0;
        s.recent.clear();
        s.probes_out = 0;
        s.probes_ok = 0;
        self.gauge(State::Open);
        metrics::counter!("breaker_opened_total", "name" => self.name.clone()).increment(1);
        tracing::warn!(breaker = %self.name, why, open_ms = self.cfg.open_ms, "circuit opened");
    }

    fn gauge(&self, state: State) {
        let v = match state {
            State::Closed => 0.0,
            State::HalfOpen => 1.0,
            State::Open => 2.0,
        };
        metrics::gauge!("breaker_state", "name" => self.name.clone()).set(v);
    }
}

impl Permit<'_> {
    /// Reports the call's outcome: `ok` false only when the target itself failed.
    pub fn record(mut self, ok: bool) {
        self.done = true;
        self.breaker.record(self.probe, ok);
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        // Dropped unrecorded: the client went away; the call says nothing about the upstream.
        if !self.done && self.probe {
            self.breaker.release_probe();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> BreakerConfig {
        BreakerConfig {
            consecutive_failures: 3,
            failure_rate_percent: 50,
            window: 10,
            open_ms: 50,
            half_open_probes: 2,
        }
    }

    #[test]
    fn a_streak_opens_then_probes_close() {
        let b = Breaker::new("t", cfg());
        for _ in 0..3 {
            b.try_acquire().unwrap().record(false);
        }
        assert_eq!(b.state(), State::Open);
        assert!(b.try_acquire().is_err(), "fails fast while open");
        std::thread::sleep(Duration::from_millis(60));
        let p1 = b.try_acquire().expect("first probe");
        assert_eq!(b.state(), State::HalfOpen);
        let p2 = b.try_acquire().expect("second probe");
        assert!(b.try_acquire().is_err(), "no more than the probes while half-open");
        p1.record(true);
        assert_eq!(b.state(), State::HalfOpen);
        p2.record(true);
        assert_eq!(b.state(), State::Closed, "the probes succeeded");
    }

    #[test]
    fn a_failed_probe_reopens() {
        let b = Breaker::new("t", cfg());
        for _ in 0..3 {
            b.try_acquire().unwrap().record(false);
        }
        std::thread::sleep(Duration::from_millis(60));
        b.try_acquire().unwrap().record(false);
        assert_eq!(b.state(), State::Open);
    }

    #[test]
    fn a_failure_rate_opens_without_a_streak() {
        let b = Breaker::new("t", cfg());
        for i in 0..10 {
            b.try_acquire().unwrap().record(i % 2 == 1);
        }
        assert_eq!(b.state(), State::Open);
    }

    #[test]
    fn an_abandoned_probe_frees_its_slot() {
        let b = Breaker::new("t", BreakerConfig { half_open_probes: 1, ..cfg() });
        for _ in 0..3 {
            b.try_acquire().unwrap().record(false);
        }
        std::thread::sleep(Duration::from_millis(60));
        drop(b.try_acquire().unwrap());
        b.try_acquire().expect("the slot is free again").record(true);
        assert_eq!(b.state(), State::Closed);
    }
}
