//! The result cache: a user's own identical request answered again from the cache (per user,
//! provider, model, prompt and limits), and what a hit is charged.

use std::time::Duration;

use crate::{
    error::{AiError, Result},
    providers::{Answer, Usage},
};

use crate::{generator::*, ports::Entitlement};

/// Cache key prefixes.
pub(crate) const RESULT_KEY: &str = "ai:res2:";

/// A cached answer.
#[derive(serde::Serialize, serde::Deserialize)]
pub(crate) struct CachedAnswer {
    pub(crate) provider: String,
    pub(crate) answer: Answer,
}

impl Generator {
    /// The result cache's key: per user (another user's identical request is no hit, so the
    /// cache tells nobody what others asked), per provider, model, prompt and limits.
    pub(crate) fn result_key(&self, p: &Prepared) -> String {
        let (provider, model) = self.target(p);
        let messages = serde_json::to_vec(&p.messages).unwrap_or_default();
        // Under the user, so a deleted user's answers go with them.
        format!(
            "{RESULT_KEY}{}:{}",
            p.user,
            sha_hex(&[
                p.user.as_bytes(),
                provider.as_bytes(),
                model.as_bytes(),
                &messages,
                &p.max_tokens.to_be_bytes(),
                &self.temperature(p).to_be_bytes(),
                &p.req.sampling.top_p.map_or([0xff; 4], f32::to_be_bytes),
                p.req.sampling.stop.join("\u{0}").as_bytes(),
            ])
        )
    }

    pub(crate) async fn cached(&self, p: &Prepared) -> Option<CachedAnswer> {
        if self.inner.cfg.cache_ttl_secs == 0 || p.req.fresh {
            return None;
        }
        match self.inner.cache.get(&self.result_key(p)).await {
            Ok(Some(b)) => serde_json::from_slice(&b).ok(),
            Ok(None) => None,
            Err(e) => {
                tracing::warn!(error = %e, "result cache unavailable; generating");
                None
            }
        }
    }

    pub(crate) async fn remember(&self, p: &Prepared, provider: &str, answer: &Answer) {
        self.remember_at(&self.result_key(p), provider, answer).await;
    }

    pub(crate) async fn remember_at(&self, key: &str, provider: &str, answer: &Answer) {
        let ttl = self.inner.cfg.cache_ttl_secs;
        if ttl == 0 || answer.finish_reason == "content_filter" {
            return;
        }
        let value = CachedAnswer { provider: provider.to_owned(), answer: answer.clone() };
        if let Ok(bytes) = serde_json::to_vec(&value) {
            let _ = self.inner.cache.set(key, bytes.into(), Some(Duration::from_secs(ttl))).await;
        }
    }

    /// A cache hit's charge: a configured share of its tokens, settled through a hold, or just
    /// an entitlement check when hits are free (a plan must still include the function).
    pub(crate) async fn charge_hit(&self, p: &Prepared, key: &str, usage: Usage) -> Result<()> {
        let pct = self.inner.cfg.cache_hit_charge_percent as u64;
        let tokens = usage.total() as u64 * pct / 100;
        if tokens == 0 {
            return match self.entitlement(p).await? {
                Entitlement::Allowed => Ok(()),
                Entitlement::NotSubscribed(why) => Err(AiError::NotSubscribed(why)),
                Entitlement::QuotaExhausted(why) => Err(AiError::QuotaExceeded(why)),
            };
        }
        let (hold, _) = self.reserve(p, tokens, key, SYNC_HOLD_TTL).await?;
        self.commit(&hold, tokens, None).await;
        Ok(())
    }
}
