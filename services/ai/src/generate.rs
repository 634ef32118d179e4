//! `Generate`: inline (from the cache or the provider) or queued, by the request's mode.

use skillup_kit::identity::Caller;
use uuid::Uuid;

use crate::{
    domain::{Completion, Delivery, GenerationRequest, Task},
    error::Result,
    providers::Answer,
};

use crate::generator::*;
use crate::idempotency::Claim;

/// What `Generate` did.
pub enum Outcome {
    Inline(Completion),
    Queued(Box<Task>),
}

impl Generator {
    /// `Generate`: inline or queued by the mode.
    pub async fn generate(&self, identity: &Caller, req: GenerationRequest) -> Result<Outcome> {
        let p = self.prepare(identity, req).await?;
        if self.queues(&p) {
            return Ok(Outcome::Queued(Box::new(self.enqueue(p).await?)));
        }
        self.answer(&p).await.map(Outcome::Inline)
    }

    /// A chat completion its caller wants whole (`/v1` without `stream`): answered inline
    /// whatever its length (the provider asked for its whole answer, as `Generate` does).
    pub async fn whole(&self, identity: &Caller, req: GenerationRequest) -> Result<Completion> {
        let p = self.prepare(identity, req).await?;
        self.answer(&p).await
    }

    /// Answered inline once per idempotency key: a replay gives the first answer back.
    async fn answer(&self, p: &Prepared) -> Result<Completion> {
        match self.claim(p).await? {
            None => self.inline(p).await,
            Some(Claim::Replay(c)) => Ok(c),
            Some(Claim::Ours { key, fingerprint }) => {
                let res = self.inline(p).await;
                self.settle_claim(&key, &fingerprint, res.as_ref().ok()).await;
                res
            }
        }
    }

    pub(crate) async fn inline(&self, p: &Prepared) -> Result<Completion> {
        let id = Uuid::now_v7();
        let key = format!("ai:{id}");
        let delivery = if p.req.via_api { Delivery::Api } else { Delivery::Inline };
        if let Some(hit) = self.cached(p).await {
            self.charge_hit(p, &key, hit.answer.usage).await?;
            metrics::counter!("ai_cache_hits_total").increment(1);
            self.keep(p, ended(id, delivery, &hit.provider, &hit.answer, None)).await;
            return Ok(completion(&id, &hit.provider, hit.answer, true));
        }
        let (hold, _) = self.reserve(p, p.hold_tokens(), &key, SYNC_HOLD_TTL).await?;
        let started = std::time::Instant::now();
        let answered = match &p.req.raw {
            Some(r) => {
                self.inner.chain.complete_on(&r.provider, &r.model, |m| self.chat(p, m)).await
            }
            None => self.inner.chain.complete(&p.req.function, |m| self.chat(p, m)).await,
        };
        match answered {
            Ok((served, answer)) => {
                metrics::histogram!("ai_provider_seconds", "mode" => "sync")
                    .record(started.elapsed().as_secs_f64());
                // Settle and cache off the answer's path: the answer is produced either way, and
                // a hold a crash leaves unsettled lapses back to the user (under-charge, never
                // over).
                let (this, tokens, label) =
                    (self.clone(), answer.usage.total() as u64, served.label);
                let (key, kept) = (self.result_key(p), answer.clone());
                self.keep(p, ended(id, delivery, label, &answer, Some(&hold))).await;
                tokio::spawn(async move {
                    this.remember_at(&key, label, &kept).await;
                    this.commit(&hold, tokens, None).await;
                });
                Ok(completion(&id, served.label, answer, false))
            }
            Err(e) => {
                self.release(&hold, crate::ports::Release::after(&e)).await;
                Err(e.into())
            }
        }
    }
}

/// A generation that ended well, for [`Generator::keep`].
pub(crate) fn ended<'a>(
    id: Uuid,
    delivery: Delivery,
    provider: &'a str,
    answer: &'a Answer,
    hold: Option<&'a str>,
) -> Ended<'a> {
    Ended { id, delivery, provider, answer, hold, error: None, interrupted: false }
}
