//! `GenerateStream`: `started`, the text as it comes, `finished` with the usage charged.

use futures::StreamExt;
use skillup_kit::identity::Caller;
use tokio_stream::wrappers::ReceiverStream;
use uuid::Uuid;

use crate::{
    domain::{Completion, Delivery, GenerationRequest, StreamEvent},
    error::{AiError, Result},
    providers::{Answer, Chunk, Usage, estimate_tokens},
};

use crate::generator::*;
use crate::idempotency::Claim;

/// The events of a streamed generation; an error ends it.
pub type Events = ReceiverStream<Result<StreamEvent>>;

/// A finished answer as a stream: `started`, its words, `finished`.
pub(crate) fn replay(c: Completion) -> Events {
    let out = c.into_events();
    let (tx, rx) = tokio::sync::mpsc::channel(out.len());
    for e in out {
        let _ = tx.try_send(Ok(e));
    }
    ReceiverStream::new(rx)
}

impl Generator {
    /// `GenerateStream`: `started`, the text as it comes, `finished` with the usage charged.
    /// A client that leaves stops the provider call; the hold settles by what was produced.
    /// With an idempotency key, the same request again replays the first stream.
    pub async fn stream(&self, identity: &Caller, req: GenerationRequest) -> Result<Events> {
        let p = self.prepare(identity, req).await?;
        let claim = match self.claim(&p).await? {
            Some(Claim::Replay(c)) => return Ok(replay(c)),
            Some(Claim::Ours { key, fingerprint }) => Some((key, fingerprint)),
            None => None,
        };
        let res = self.stream_now(p, claim.clone()).await;
        if res.is_err()
            && let Some((key, fingerprint)) = &claim
        {
            self.settle_claim(key, fingerprint, None).await;
        }
        res
    }

    pub(crate) async fn stream_now(
        &self,
        p: Prepared,
        claim: Option<(String, [u8; 32])>,
    ) -> Result<Events> {
        let id = Uuid::now_v7();
        let key = format!("ai:{id}");
        if let Some(hit) = self.cached(&p).await {
            self.charge_hit(&p, &key, hit.answer.usage).await?;
            metrics::counter!("ai_cache_hits_total").increment(1);
            let delivery = if p.req.via_api { Delivery::Api } else { Delivery::Stream };
            self.keep(&p, crate::generate::ended(id, delivery, &hit.provider, &hit.answer, None))
                .await;
            let c = completion(&id, &hit.provider, hit.answer, true);
            if let Some((key, fingerprint)) = &claim {
                self.settle_claim(key, fingerprint, Some(&c)).await;
            }
            return Ok(replay(c));
        }
        let (tx, rx) = tokio::sync::mpsc::channel(64);

        let (hold, _) = self.reserve(&p, p.hold_tokens(), &key, SYNC_HOLD_TTL).await?;
        let opened = match &p.req.raw {
            Some(r) => {
                self.inner.chain.stream_on(&r.provider, &r.model, |m| self.chat(&p, m)).await
            }
            None => self.inner.chain.stream(&p.req.function, |m| self.chat(&p, m)).await,
        };
        let (served, first, mut rest) = match opened {
            Ok(s) => s,
            Err(e) => {
                self.release(&hold, crate::ports::Release::after(&e)).await;
                return Err(e.into());
            }
        };
        let this = self.clone();
        tokio::spawn(skillup_kit::i18n::carried(async move {
            let mut text = String::new();
            let mut usage: Option<Usage> = None;
            let mut finish: Option<String> = None;
            let mut failure: Option<crate::providers::ProviderError> = None;
            let mut left = false;
            let started = Ok(StreamEvent::Started {
                id: id.to_string(),
                provider: served.label.to_owned(),
                model: served.model.clone(),
                cached: false,
            });
            let mut pending = first.map(Ok);
            if tx.send(started).await.is_err() {
                left = true;
            }
            while !left {
                let item = match pending.take() {
                    Some(i) => Some(i),
                    None => tokio::select! {
                        i = rest.next() => i,
                        _ = tx.closed() => { left = true; break; }
                    },
                };
                match item {
                    None => break,
                    Some(Ok(Chunk::Delta(t))) => {
                        text.push_str(&t);
                        if tx.send(Ok(StreamEvent::Delta(t))).await.is_err() {
                            left = true;
                        }
                    }
                    Some(Ok(Chunk::Usage(u))) => usage = Some(u),
                    Some(Ok(Chunk::Finish(f))) => finish = Some(f),
                    Some(Err(e)) => {
                        failure = Some(e);
                        break;
                    }
                }
            }
            // Dropping the provider stream closes its connection: the provider stops.
            drop(rest);
            let produced = Usage {
                input: usage.map_or(p.estimated_input, |u| u.input),
                output: match usage {
                    Some(u) if !left && failure.is_none() => u.output,
                    _ => estimate_tokens(&text),
                },
            };
            let outcome = if left {
                "client_left"
            } else if failure.is_some() {
                "provider_failed"
            } else {
                "ok"
            };
            metrics::counter!("ai_streams_total", "outcome" => outcome).increment(1);
            // Filed in the library first, whatever happened: a stream the client left with
            // what it was sent, one whose provider failed with what came before.
            let (finish_reason, error) = if left {
                ("cancelled".to_owned(), None)
            } else if failure.is_some() {
                let error = "the provider failed mid-stream; what came before is kept";
                ("error".to_owned(), Some(error.to_owned()))
            } else {
                (finish.unwrap_or_else(|| "stop".into()), None)
            };
            let answer = Answer { text, usage: produced, finish_reason, model: served.model };
            let end = Ended {
                id,
                delivery: if p.req.via_api { Delivery::Api } else { Delivery::Stream },
                provider: served.label,
                answer: &answer,
                hold: Some(&hold),
                error,
                interrupted: left,
            };
            this.keep(&p, end).await;
            if left {
                tracing::info!(generation = %id, tokens = produced.total(), "client left mid-stream; provider call cancelled");
                if let Some((key, fingerprint)) = &claim {
                    this.settle_claim(key, fingerprint, None).await;
                }
            } else if let Some(e) = failure {
                // Settled before the error: a client sees the end only after the charge.
                this.commit(&hold, produced.total() as u64, None).await;
                if let Some((key, fingerprint)) = &claim {
                    this.settle_claim(key, fingerprint, None).await;
                }
                let _ = tx.send(Err(AiError::Provider(e))).await;
                return;
            } else {
                // The last event first; the stream closes once the hold is settled. A replay
                // of the key is ready before the client sees the end.
                if let Some((key, fingerprint)) = &claim {
                    let c = completion(&id, served.label, answer.clone(), false);
                    this.settle_claim(key, fingerprint, Some(&c)).await;
                }
                let finish_reason = answer.finish_reason.clone();
                let _ = tx.send(Ok(StreamEvent::Finished { usage: produced, finish_reason })).await;
                this.remember(&p, served.label, &answer).await;
            }
            this.commit(&hold, produced.total() as u64, None).await;
        }));
        Ok(ReceiverStream::new(rx))
    }
}
