//! What the notification service asks of others: the [`Directory`] of accounts (auth), for
//! users it has not heard of — people who registered before it first ran.

use async_trait::async_trait;
use uuid::Uuid;

use crate::error::Result;

/// Where and how to write to a user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Contact {
    pub email: String,
    /// `en` or `ru`.
    pub locale: String,
}

#[async_trait]
pub trait Directory: Send + Sync + 'static {
    /// The active account's contact; `None` when there is no such account (or no longer).
    async fn contact(&self, user: Uuid) -> Result<Option<Contact>>;
}
