//! Local stand-ins for the payment providers, speaking their real wire formats: Stripe's
//! Checkout Sessions API and signed webhooks ([`stripe`]), YooKassa's v3 payments API and
//! notifications ([`yookassa`]). Each listens on a loopback port, checks authentication and
//! request shapes as the provider does, deduplicates by idempotency key, can be told to fail
//! or stall, and has a hosted page a person (or a test) pays on.

pub mod push;
pub mod stripe;
pub mod yookassa;

use std::sync::{
    Arc, Mutex,
    atomic::{AtomicU32, AtomicU64, Ordering},
};

/// Faults a stand-in injects into its create call.
#[derive(Debug, Default)]
pub struct Faults {
    /// The next this many creates answer 500 (after doing nothing).
    pub fail_creates: AtomicU32,
    /// The next this many creates do their work, then stall this many ms before answering
    /// (a client's timeout: the payment exists though the client never heard).
    pub stall_creates: AtomicU32,
    pub stall_ms: AtomicU64,
    /// Create calls received (including failed and repeated ones).
    pub creates_seen: AtomicU32,
}

impl Faults {
    /// Whether this create fails (counting it).
    pub(crate) fn fail_now(&self) -> bool {
        self.creates_seen.fetch_add(1, Ordering::SeqCst);
        take(&self.fail_creates)
    }

    pub(crate) async fn maybe_stall(&self) {
        if take(&self.stall_creates) {
            let ms = self.stall_ms.load(Ordering::SeqCst);
            tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
        }
    }
}

fn take(n: &AtomicU32) -> bool {
    n.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |v| v.checked_sub(1)).is_ok()
}

/// A listening stand-in: its base URL, and its server task (stopped on drop).
pub struct Running {
    pub base_url: String,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Running {
    /// A handle that owns no server (a handler's view of its own stand-in).
    pub(crate) fn detached() -> Self {
        Self { base_url: String::new(), task: None }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

pub(crate) async fn serve(router: axum::Router) -> Running {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("a loopback port");
    let base_url = format!("http://{}", listener.local_addr().expect("its address"));
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    Running { base_url, task: Some(task) }
}

/// Idempotency keys seen: the request's fingerprint and the first answer.
pub(crate) type Keys = Arc<Mutex<std::collections::HashMap<String, (String, serde_json::Value)>>>;

/// What an idempotency key says about a request.
pub(crate) enum Seen {
    /// Not seen: do the work, then [`remember`] the answer.
    New,
    /// The same request again: its first answer.
    Replay(serde_json::Value),
    /// Another request with a used key.
    Conflict,
}

pub(crate) fn seen(keys: &Keys, key: &str, fingerprint: &str) -> Seen {
    match keys.lock().unwrap().get(key) {
        None => Seen::New,
        Some((first, answer)) if first == fingerprint => Seen::Replay(answer.clone()),
        Some(_) => Seen::Conflict,
    }
}

pub(crate) fn remember(keys: &Keys, key: String, fingerprint: String, answer: &serde_json::Value) {
    keys.lock().unwrap().insert(key, (fingerprint, answer.clone()));
}
