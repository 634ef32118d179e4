//! Redis adapter (fred). Multi-step operations run as Lua scripts, so they are atomic on the
//! server whatever the number of clients. fred reconnects by itself with backoff.

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use fred::{
    prelude::{ClientLike, Config, KeysInterface, LuaInterface, ReconnectPolicy},
    types::{Builder, Expiration, SetOptions, Value},
};

use super::{Cache, Expect, Taken};
use crate::{Error, Result};

const INCR: &str = r#"
local v = redis.call('INCRBY', KEYS[1], ARGV[1])
local ttl = tonumber(ARGV[2])
if ttl > 0 and redis.call('PTTL', KEYS[1]) == -1 then
  redis.call('PEXPIRE', KEYS[1], ttl)
end
return v
"#;

// ARGV: expect_absent ("1"/"0"), expected, delete ("1"/"0"), new, ttl_ms
const CAS: &str = r#"
local cur = redis.call('GET', KEYS[1])
local ok
if ARGV[1] == '1' then ok = (cur == false) else ok = (cur == ARGV[2]) end
if not ok then return 0 end
if ARGV[3] == '1' then
  redis.call('DEL', KEYS[1])
elseif tonumber(ARGV[5]) > 0 then
  redis.call('SET', KEYS[1], ARGV[4], 'PX', ARGV[5])
else
  redis.call('SET', KEYS[1], ARGV[4])
end
return 1
"#;

// `cache::gcra` on the server's clock. ARGV: interval_us, burst. Returns allowed (1/0),
// remaining, wait_us. The key holds the theoretical arrival time in µs (exact in a double).
const TAKE: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = math.max(tonumber(ARGV[1]), 1)
local capacity = interval * math.max(tonumber(ARGV[2]), 1)
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local nxt = tat + interval
if nxt - now > capacity then
  return {0, 0, nxt - capacity - now}
end
redis.call('SET', KEYS[1], string.format('%.0f', nxt), 'PX', math.max(math.ceil((nxt - now) / 1000), 1))
return {1, math.floor((capacity - (nxt - now)) / interval), nxt - now}
"#;

/// The Redis adapter. Every key gets `prefix` in front.
#[derive(Clone)]
pub struct RedisCache {
    client: fred::clients::Client,
    prefix: String,
}

impl std::fmt::Debug for RedisCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisCache").field("prefix", &self.prefix).finish_non_exhaustive()
    }
}

impl RedisCache {
    /// Connects (and waits for the first connection, so a wrong URL fails at start).
    pub async fn connect(url: &str, prefix: impl Into<String>) -> Result<Self> {
        let config = Config::from_url(url)?;
        let client = Builder::from_config(config)
            .with_connection_config(|c| {
                c.connection_timeout = Duration::from_secs(5);
                c.internal_command_timeout = Duration::from_secs(5);
                // Small request/answer pairs: never wait for Nagle.
                c.tcp.nodelay = Some(true);
            })
            // A command waits at most 2 s, reconnects included: callers that must fail closed
            // (token validation) answer "unavailable" instead of hanging.
            .with_performance_config(|p| p.default_command_timeout = Duration::from_secs(2))
            .set_policy(ReconnectPolicy::new_exponential(0, 100, 5_000, 2))
            .build()?;
        client.init().await?;
        Ok(Self { client, prefix: prefix.into() })
    }

    fn key(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    /// The underlying client, for callers that need a Redis-only feature (pub/sub).
    pub fn client(&self) -> &fred::clients::Client {
        &self.client
    }
}

fn ttl_ms(ttl: Option<Duration>) -> i64 {
    // A zero TTL would mean "never expires" to the scripts; round up to 1 ms instead.
    ttl.map(|t| (t.as_millis() as i64).max(1)).unwrap_or(0)
}

#[async_trait]
impl Cache for RedisCache {
    async fn get(&self, key: &str) -> Result<Option<Bytes>> {
        Ok(self.client.get::<Option<Bytes>, _>(self.key(key)).await?)
    }

    async fn get_many(&self, keys: &[&str]) -> Result<Vec<Option<Bytes>>> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<String> = keys.iter().map(|k| self.key(k)).collect();
        Ok(self.client.mget::<Vec<Option<Bytes>>, _>(keys).await?)
    }

    async fn set(&self, key: &str, value: Bytes, ttl: Option<Duration>) -> Result<()> {
        let exp = ttl.map(|t| Expiration::PX(ttl_ms(Some(t))));
        self.client.set::<(), _, _>(self.key(key), value, exp, None, false).await?;
        Ok(())
    }

    async fn set_if_absent(&self, key: &str, value: Bytes, ttl: Option<Duration>) -> Result<bool> {
        let exp = ttl.map(|t| Expiration::PX(ttl_ms(Some(t))));
        let res: Value =
            self.client.set(self.key(key), value, exp, Some(SetOptions::NX), false).await?;
        Ok(!res.is_null())
    }

    async fn delete(&self, key: &str) -> Result<bool> {
        Ok(self.client.del::<i64, _>(self.key(key)).await? > 0)
    }

    async fn delete_prefix(&self, prefix: &str) -> Result<u64> {
        use fred::types::scan::Scanner;
        use futures::TryStreamExt;
        // SCAN's MATCH is a glob: the prefix's own special characters are literal.
        let mut pattern = String::new();
        for c in self.key(prefix).chars() {
            if matches!(c, '*' | '?' | '[' | ']' | '\\') {
                pattern.push('\\');
            }
            pattern.push(c);
        }
        pattern.push('*');
        let mut deleted = 0u64;
        let mut pages = std::pin::pin!(self.client.scan(pattern, Some(500), None));
        while let Some(mut page) = pages.try_next().await? {
            if let Some(keys) = page.take_results().filter(|k| !k.is_empty()) {
                deleted += self.client.unlink::<i64, _>(keys).await?.max(0) as u64;
            }
            page.next();
        }
        Ok(deleted)
    }

    async fn incr(&self, key: &str, delta: i64, ttl: Option<Duration>) -> Result<i64> {
        self.client
            .eval::<i64, _, _, _>(INCR, vec![self.key(key)], vec![delta, ttl_ms(ttl)])
            .await
            .map_err(Error::from)
    }

    async fn take(&self, key: &str, interval: Duration, burst: u32) -> Result<Taken> {
        let args = vec![interval.as_micros() as i64, i64::from(burst)];
        let (allowed, remaining, wait): (i64, i64, i64) =
            self.client.eval(TAKE, vec![self.key(key)], args).await?;
        Ok(Taken {
            allowed: allowed == 1,
            remaining: remaining.clamp(0, i64::from(u32::MAX)) as u32,
            wait: Duration::from_micros(wait.max(0) as u64),
        })
    }

    async fn compare_and_set(
        &self,
        key: &str,
        expect: Expect,
        new: Option<Bytes>,
        ttl: Option<Duration>,
    ) -> Result<bool> {
        let (absent, expected) = match expect {
            Expect::Absent => ("1", Bytes::new()),
            Expect::Value(v) => ("0", v),
        };
        let (delete, new) = match new {
            Some(v) => ("0", v),
            None => ("1", Bytes::new()),
        };
        let args: Vec<Value> = vec![
            absent.into(),
            Value::Bytes(expected),
            delete.into(),
            Value::Bytes(new),
            ttl_ms(ttl).into(),
        ];
        let changed: i64 = self.client.eval(CAS, vec![self.key(key)], args).await?;
        Ok(changed == 1)
    }

    async fn ttl(&self, key: &str) -> Result<Option<Option<Duration>>> {
        let ms: i64 = self.client.pttl(self.key(key)).await?;
        Ok(match ms {
            -2 => None,
            -1 => Some(None),
            ms => Some(Some(Duration::from_millis(ms.max(0) as u64))),
        })
    }

    async fn ping(&self) -> Result<()> {
        self.client.ping::<String>(None).await?;
        Ok(())
    }
}
