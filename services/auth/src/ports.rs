//! What auth asks of the other services: each that holds a part of a person's data hands it
//! over for that person's export ([`DataHolder`]; gRPC adapters in [`crate::clients`]).

use async_trait::async_trait;
use futures::stream::BoxStream;
use skillup_kit::export::Piece;
use uuid::Uuid;

/// The pieces of one service's part, in order, or why it stopped (its words).
pub type Part = BoxStream<'static, Result<Piece, String>>;

/// A service that holds data about people.
#[async_trait]
pub trait DataHolder: Send + Sync {
    /// The service's name (logs, errors).
    fn name(&self) -> &'static str;

    /// Everything it holds about `user`, worded in the language of the task it is asked from.
    async fn export(&self, user: Uuid) -> Result<Part, String>;
}
