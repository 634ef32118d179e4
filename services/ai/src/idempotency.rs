//! Idempotency keys of inline and streamed generations: a key binds to one request; the same
//! request again gets the first answer, another request with the key is refused.

use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::{
    domain::{Completion, GenerationRequest},
    error::{AiError, Result},
};

use crate::generator::*;

/// Idempotency records of inline and streamed generations: `P` + the request's fingerprint
/// while it runs, `R` + fingerprint + the answer (JSON) once done (`3`: the record's layout).
pub(crate) const IDEM_KEY: &str = "ai:idem3:";

/// How long a running request's claim on its key lasts if its process dies.
pub(crate) const IDEM_PENDING: Duration = Duration::from_secs(600);

/// How long a finished request's answer is replayed for its key.
pub(crate) const IDEM_DONE: Duration = Duration::from_secs(86_400);

/// What a client's idempotency key already stands for.
pub(crate) enum Claim {
    /// The key is ours now: run the request, then [`Generator::settle_claim`].
    Ours { key: String, fingerprint: [u8; 32] },
    /// The same request ran already: its answer.
    Replay(Completion),
}

/// The request a key binds to: everything that decides the answer, in a canonical order
/// (parameters sorted), hashed. Delivery (inline or streamed, the mode) is not part of it.
pub(crate) fn fingerprint(r: &GenerationRequest) -> [u8; 32] {
    let mut params: Vec<(&String, &String)> = r.params.iter().collect();
    params.sort();
    let mut h = Sha256::new();
    let mut part = |b: &[u8]| {
        h.update((b.len() as u64).to_be_bytes());
        h.update(b);
    };
    part(r.topic.trim().as_bytes());
    part(r.function.as_bytes());
    part(r.locale.as_bytes());
    part(&r.max_tokens.to_be_bytes());
    for (k, v) in params {
        part(k.as_bytes());
        part(v.as_bytes());
    }
    h.finalize().into()
}

pub(crate) fn key_reused() -> AiError {
    AiError::KeyReused(
        "this Idempotency-Key was already used for another request; send a new key with a new request"
            .into(),
    )
}

impl Generator {
    /// Binds the request's idempotency key (if any) to the request: the first request with a
    /// key claims it; the same request again gets the first answer (or, while the first still
    /// runs, a conflict to retry); another request with the key is refused.
    pub(crate) async fn claim(&self, p: &Prepared) -> Result<Option<Claim>> {
        if p.req.idempotency_key.is_empty() {
            return Ok(None);
        }
        let key = format!("{IDEM_KEY}{}:{}", p.user, sha_hex(&[p.req.idempotency_key.as_bytes()]));
        let fingerprint = fingerprint(&p.req);
        let mut pending = vec![b'P'];
        pending.extend(fingerprint);
        let cache = &self.inner.cache;
        if cache.set_if_absent(&key, pending.into(), Some(IDEM_PENDING)).await? {
            return Ok(Some(Claim::Ours { key, fingerprint }));
        }
        match cache.get(&key).await? {
            Some(b) if b.len() >= 33 && b[1..33] != fingerprint => Err(key_reused()),
            Some(b) if b[0] == b'R' && b.len() >= 33 => serde_json::from_slice(&b[33..])
                .map(|c| Some(Claim::Replay(c)))
                .map_err(|e| AiError::Unavailable(format!("stored answer: {e}"))),
            _ => Err(AiError::Conflict(
                "a request with this idempotency key is still running; retry in a moment".into(),
            )),
        }
    }

    /// Ends a claim: the answer is kept for replays, or (no answer: the request failed, or its
    /// client left mid-stream) the key is free again — whatever was produced was charged.
    pub(crate) async fn settle_claim(
        &self,
        key: &str,
        fingerprint: &[u8; 32],
        answer: Option<&Completion>,
    ) {
        let cache = &self.inner.cache;
        let res = match answer {
            Some(c) => {
                let mut v = vec![b'R'];
                v.extend(fingerprint);
                v.extend(serde_json::to_vec(c).unwrap_or_default());
                cache.set(key, v.into(), Some(IDEM_DONE)).await
            }
            None => cache.delete(key).await.map(|_| ()),
        };
        if let Err(e) = res {
            // The pending claim lapses on its own; until then the key answers "still running".
            tracing::warn!(error = %e, "idempotency record not updated");
        }
    }
}
