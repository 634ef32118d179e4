//! The services ai calls, as the rules need them: quota at the subscribe service and prompts at
//! the prompt service. Their gRPC adapters are in [`crate::clients`]; the rules see only these
//! traits and types, so no transport type runs through them.

use std::collections::HashMap;

use async_trait::async_trait;
use skillup_kit::identity::Caller;
use uuid::Uuid;

use crate::{error::Result, providers::ChatMessage};

/// A hold to take: `tokens` of `function` for `user`, under an idempotency key (a second
/// reserve with the key finds the first one's hold), lapsing after `ttl_secs` if never settled.
#[derive(Clone, Debug)]
pub struct HoldAsk {
    pub user: Uuid,
    pub function: String,
    pub tokens: u64,
    pub key: String,
    pub ttl_secs: u32,
}

/// A hold taken: its id, and the queue priority the caller's plan gives.
#[derive(Clone, Debug)]
pub struct Hold {
    pub id: String,
    pub priority: u32,
}

/// How a commit or release ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Settled {
    /// Settled now.
    Now,
    /// Settled another way already (released by a cancel, committed by a retry).
    Already,
    /// The hold is gone (only a database crash right after the reserve loses one).
    Gone,
}

/// Why a hold goes back (the plans' service levels count the platform's failures).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Release {
    /// The platform could not generate it (every provider refused, it could not be queued).
    Failed,
    /// Its owner cancelled it.
    Cancelled,
    /// Neither: its work goes on under another hold, was never the generation's own, or the
    /// provider refused its content (the asker's doing, not the platform's).
    Unsaid,
}

impl Release {
    /// How a generation the provider chain could not answer counts.
    pub fn after(e: &crate::providers::ProviderError) -> Self {
        match e {
            crate::providers::ProviderError::ContentPolicy(_) => Release::Unsaid,
            _ => Release::Failed,
        }
    }
}

/// Whether the caller's plan includes a function, and if not why.
#[derive(Clone, Debug)]
pub enum Entitlement {
    Allowed,
    /// No plan includes it.
    NotSubscribed(String),
    /// Included, but the period's quota is used up.
    QuotaExhausted(String),
}

/// The subscribe service's quota, as ai uses it.
#[async_trait]
pub trait Quota: Send + Sync + 'static {
    async fn entitlement(&self, user: Uuid, function: &str) -> Result<Entitlement>;
    async fn reserve(&self, ask: &HoldAsk) -> Result<Hold>;
    /// One attempt; the caller retries an error. `queue_wait`: queued work's 202 → start.
    async fn commit(
        &self,
        hold: &str,
        tokens: u64,
        queue_wait: Option<std::time::Duration>,
    ) -> Result<Settled>;
    /// One attempt; the caller retries an error.
    async fn release(
        &self,
        hold: &str,
        why: Release,
        queue_wait: Option<std::time::Duration>,
    ) -> Result<Settled>;
}

/// What to build a prompt from.
#[derive(Clone, Debug)]
pub struct PromptAsk {
    pub topic: String,
    pub function: String,
    pub params: HashMap<String, String>,
    pub locale: String,
    pub max_tokens: u32,
}

/// A built prompt: the messages, the limits the function sets, and its class.
#[derive(Clone, Debug)]
pub struct BuiltPrompt {
    pub messages: Vec<ChatMessage>,
    /// The function is a long one (queued under `mode: auto`).
    pub long: bool,
    pub max_tokens: u32,
    pub estimated_input: u32,
    pub locale: String,
}

/// The prompt service, as ai uses it.
#[async_trait]
pub trait Prompts: Send + Sync + 'static {
    /// Builds the prompt as `caller` (the prompt service checks who asks).
    async fn build(&self, caller: &Caller, ask: &PromptAsk) -> Result<BuiltPrompt>;
}
