//! The transport of a service's part of a person's data export (`ExportUserData`): the
//! [`crate::export::Sink`] a use case writes into, as the stream of `ExportChunk`s tonic sends.

use std::{fmt::Display, future::Future, pin::Pin};

use futures::{Stream, StreamExt};
use skillup_proto::common::v1::{ExportChunk, ExportUserDataRequest};
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;
use uuid::Uuid;

use crate::export::{self, ExportError, Sink};

/// What an `ExportUserData` method answers.
pub type ExportStream = Pin<Box<dyn Stream<Item = Result<ExportChunk, Status>> + Send>>;

/// The answer of an `ExportUserData` call: `write` (given the account asked about) runs on its
/// own task and what it writes is streamed; a failure ends the stream with UNAVAILABLE carrying
/// its words (the export is tried again later). A malformed `user_id` is INVALID_ARGUMENT.
pub fn export_part<F, Fut, E>(
    req: &ExportUserDataRequest,
    write: F,
) -> Result<tonic::Response<ExportStream>, Status>
where
    F: FnOnce(Uuid, Sink) -> Fut,
    Fut: Future<Output = Result<(), E>> + Send + 'static,
    E: Display + Send + 'static,
{
    let user = Uuid::parse_str(&req.user_id)
        .map_err(|_| crate::error::invalid_field("user_id", crate::invalid::uuid("user_id")))?;
    Ok(tonic::Response::new(export_stream(user, write)))
}

fn export_stream<F, Fut, E>(user: Uuid, write: F) -> ExportStream
where
    F: FnOnce(Uuid, Sink) -> Fut,
    Fut: Future<Output = Result<(), E>> + Send + 'static,
    E: Display + Send + 'static,
{
    let (sink, rx) = export::channel(8);
    let writing = write(user, sink.clone());
    tokio::spawn(async move {
        if let Err(e) = writing.await {
            tracing::warn!(error = %e, "a data export part failed");
            sink.fail(e).await;
        }
    });
    Box::pin(ReceiverStream::new(rx).map(|r| match r {
        Ok(p) => Ok(ExportChunk { path: p.path, data: p.data.to_vec() }),
        Err(ExportError::Abandoned) => Err(Status::cancelled("the export was abandoned")),
        Err(ExportError::Failed(why)) => Err(Status::unavailable(why)),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_part_streams_its_pieces_and_a_failure_ends_it_with_unavailable() {
        let bad = ExportUserDataRequest { user_id: "x".into() };
        let err = export_part(&bad, |_, _| async { Ok::<_, String>(()) }).err().unwrap();
        assert_eq!(err.code(), tonic::Code::InvalidArgument);

        let req = ExportUserDataRequest { user_id: Uuid::nil().to_string() };
        let res = export_part(&req, |user, sink| async move {
            sink.file("a.json", format!("\"{user}\"")).await.map_err(|e| e.to_string())?;
            Err::<(), _>("the database is away".to_owned())
        })
        .unwrap();
        let got: Vec<_> = res.into_inner().collect().await;
        assert_eq!(got.len(), 2);
        let first = got[0].as_ref().unwrap();
        assert_eq!(
            (first.path.as_str(), first.data.as_slice()),
            ("a.json", &b"\"00000000-0000-0000-0000-000000000000\""[..])
        );
        let last = got[1].as_ref().unwrap_err();
        assert_eq!(
            (last.code(), last.message()),
            (tonic::Code::Unavailable, "the database is away")
        );
    }
}
