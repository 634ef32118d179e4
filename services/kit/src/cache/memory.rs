//! In-process cache for `skillup up`: one process, no server. Same semantics as Redis:
//! expiry is exact on read, and expired keys are swept as writes go by.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use async_trait::async_trait;
use bytes::Bytes;

use super::{Cache, Expect, Taken, gcra};
use crate::{Error, Result};

#[derive(Debug, Clone)]
struct Entry {
    value: Bytes,
    expires: Option<Instant>,
}

impl Entry {
    fn live(&self, now: Instant) -> bool {
        self.expires.is_none_or(|t| t > now)
    }
}

#[derive(Debug, Default)]
struct State {
    map: HashMap<String, Entry>,
    writes: u64,
}

/// The in-process adapter.
#[derive(Debug, Default)]
pub struct MemoryCache {
    state: Mutex<State>,
}

impl MemoryCache {
    pub fn new() -> Self {
        Self::default()
    }

    fn with<T>(&self, f: impl FnOnce(&mut HashMap<String, Entry>, Instant) -> T) -> T {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        state.writes += 1;
        // Amortised sweep so keys nobody reads again do not pile up.
        if state.writes.is_multiple_of(1024) {
            state.map.retain(|_, e| e.live(now));
        }
        f(&mut state.map, now)
    }

    fn live<'a>(map: &'a HashMap<String, Entry>, key: &str, now: Instant) -> Option<&'a Entry> {
        map.get(key).filter(|e| e.live(now))
    }
}

/// The clock rate budgets count on: microseconds since this process first asked.
fn micros(now: Instant) -> u64 {
    static ORIGIN: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    now.saturating_duration_since(*ORIGIN.get_or_init(Instant::now)).as_micros() as u64
}

fn deadline(now: Instant, ttl: Option<Duration>) -> Option<Instant> {
    ttl.map(|t| now + t)
}

#[async_trait]
impl Cache for MemoryCache {
    async fn get(&self, key: &str) -> Result<Option<Bytes>> {
        Ok(self.with(|m, now| Self::live(m, key, now).map(|e| e.value.clone())))
    }

    async fn get_many(&self, keys: &[&str]) -> Result<Vec<Option<Bytes>>> {
        Ok(self.with(|m, now| {
            keys.iter().map(|k| Self::live(m, k, now).map(|e| e.value.clone())).collect()
        }))
    }

    async fn take(&self, key: &str, interval: Duration, burst: u32) -> Result<Taken> {
        Ok(self.with(|m, now| {
            let at = micros(now);
            let tat = Self::live(m, key, now)
                .and_then(|e| std::str::from_utf8(&e.value).ok()?.parse().ok());
            let (taken, next) = gcra(at, tat, interval.as_micros() as u64, burst);
            if let Some(next) = next {
                let expires = Some(now + Duration::from_micros(next - at));
                m.insert(key.to_owned(), Entry { value: next.to_string().into(), expires });
            }
            taken
        }))
    }

    async fn set(&self, key: &str, value: Bytes, ttl: Option<Duration>) -> Result<()> {
        self.with(|m, now| m.insert(key.to_owned(), Entry { value, expires: deadline(now, ttl) }));
        Ok(())
    }

    async fn set_if_absent(&self, key: &str, value: Bytes, ttl: Option<Duration>) -> Result<bool> {
        Ok(self.with(|m, now| {
            if Self::live(m, key, now).is_some() {
                return false;
            }
            m.insert(key.to_owned(), Entry { value, expires: deadline(now, ttl) });
            true
        }))
    }

    async fn delete(&self, key: &str) -> Result<bool> {
        Ok(self.with(|m, now| m.remove(key).is_some_and(|e| e.live(now))))
    }

    async fn delete_prefix(&self, prefix: &str) -> Result<u64> {
        Ok(self.with(|m, now| {
            let mut n = 0;
            m.retain(|k, e| {
                let gone = k.starts_with(prefix);
                n += u64::from(gone && e.live(now));
                !gone
            });
            n
        }))
    }

    async fn incr(&self, key: &str, delta: i64, ttl: Option<Duration>) -> Result<i64> {
        self.with(|m, now| {
            let current = match Self::live(m, key, now) {
                Some(e) => Some((
                    std::str::from_utf8(&e.value)
                        .ok()
                        .and_then(|s| s.parse::<i64>().ok())
                        .ok_or_else(|| Error::Cache(format!("value at {key} is not an integer")))?,
                    e.expires,
                )),
                None => None,
            };
            let (value, expires) = current.unwrap_or((0, None));
            let next = value
                .checked_add(delta)
                .ok_or_else(|| Error::Cache(format!("increment at {key} would overflow")))?;
            let expires = expires.or_else(|| deadline(now, ttl));
            m.insert(key.to_owned(), Entry { value: Bytes::from(next.to_string()), expires });
            Ok(next)
        })
    }

    async fn compare_and_set(
        &self,
        key: &str,
        expect: Expect,
        new: Option<Bytes>,
        ttl: Option<Duration>,
    ) -> Result<bool> {
        Ok(self.with(|m, now| {
            let matches = match (&expect, Self::live(m, key, now)) {
                (Expect::Absent, None) => true,
                (Expect::Value(v), Some(e)) => e.value == *v,
                _ => false,
            };
            if !matches {
                return false;
            }
            match new {
                Some(value) => {
                    m.insert(key.to_owned(), Entry { value, expires: deadline(now, ttl) });
                }
                None => {
                    m.remove(key);
                }
            }
            true
        }))
    }

    async fn ttl(&self, key: &str) -> Result<Option<Option<Duration>>> {
        Ok(self.with(|m, now| {
            Self::live(m, key, now).map(|e| e.expires.map(|t| t.saturating_duration_since(now)))
        }))
    }

    async fn ping(&self) -> Result<()> {
        Ok(())
    }
}
