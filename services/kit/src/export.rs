//! A person's data as one service hands it over for their export (auth gathers every service's
//! part into one archive): files by path, each sent as one or more [`Piece`]s in a row, so a
//! library of any size goes through in bounded memory.
//!
//! A service's use case writes into a [`Sink`] ([`Sink::file`] for a small file,
//! [`Sink::json_array`] for a list read page by page); its transport streams what the other end
//! of [`channel`] receives.

use bytes::{Bytes, BytesMut};
use serde::Serialize;
use tokio::sync::mpsc;

/// The next bytes of the file at `path` in the archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Piece {
    pub path: String,
    pub data: Bytes,
}

/// Why a part could not be written: the reader left, or the service failed (its words).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExportError {
    #[error("the export was abandoned")]
    Abandoned,
    #[error("{0}")]
    Failed(String),
}

/// What the reading end receives: pieces in order, or why the part ended early.
pub type Received = Result<Piece, ExportError>;

/// Pieces are cut at about this size.
pub const PIECE_BYTES: usize = 64 * 1024;

/// The writing end of a part.
#[derive(Clone)]
pub struct Sink(mpsc::Sender<Received>);

/// A sink and what it sends; at most `depth` pieces wait unread.
pub fn channel(depth: usize) -> (Sink, mpsc::Receiver<Received>) {
    let (tx, rx) = mpsc::channel(depth.max(1));
    (Sink(tx), rx)
}

impl Sink {
    /// Sends the whole file at `path` (cut into pieces when it is large).
    pub async fn file(&self, path: &str, data: impl Into<Bytes>) -> Result<(), ExportError> {
        let mut data: Bytes = data.into();
        loop {
            let piece = data.split_to(data.len().min(PIECE_BYTES));
            self.send(path, piece).await?;
            if data.is_empty() {
                return Ok(());
            }
        }
    }

    /// `value` as pretty JSON at `path`.
    pub async fn json(&self, path: &str, value: &impl Serialize) -> Result<(), ExportError> {
        let mut data = serde_json::to_vec_pretty(value).map_err(failed)?;
        data.push(b'\n');
        self.file(path, data).await
    }

    /// A JSON array at `path`, written item by item ([`JsonArray::push`]) and closed by
    /// [`JsonArray::finish`].
    pub fn json_array(&self, path: &str) -> JsonArray {
        JsonArray { sink: self.clone(), path: path.to_owned(), buf: BytesMut::new(), items: 0 }
    }

    /// Ends the part early with `why` (the reader fails the whole export).
    pub async fn fail(&self, why: impl std::fmt::Display) {
        let _ = self.0.send(Err(ExportError::Failed(why.to_string()))).await;
    }

    async fn send(&self, path: &str, data: Bytes) -> Result<(), ExportError> {
        let piece = Piece { path: path.to_owned(), data };
        self.0.send(Ok(piece)).await.map_err(|_| ExportError::Abandoned)
    }
}

/// A JSON array being written (see [`Sink::json_array`]).
pub struct JsonArray {
    sink: Sink,
    path: String,
    buf: BytesMut,
    items: u64,
}

impl JsonArray {
    pub async fn push(&mut self, item: &impl Serialize) -> Result<(), ExportError> {
        self.buf.extend_from_slice(if self.items == 0 { b"[\n  " } else { b",\n  " });
        let json = serde_json::to_string_pretty(item).map_err(failed)?;
        self.buf.extend_from_slice(json.replace('\n', "\n  ").as_bytes());
        self.items += 1;
        if self.buf.len() >= PIECE_BYTES {
            let data = self.buf.split().freeze();
            self.sink.send(&self.path, data).await?;
        }
        Ok(())
    }

    /// Closes the array; an array with no items is `[]`. Answers how many there were.
    pub async fn finish(mut self) -> Result<u64, ExportError> {
        self.buf.extend_from_slice(if self.items == 0 { b"[]\n" } else { b"\n]\n" });
        let data = self.buf.split().freeze();
        self.sink.send(&self.path, data).await?;
        Ok(self.items)
    }
}

fn failed(e: impl std::fmt::Display) -> ExportError {
    ExportError::Failed(e.to_string())
}

/// Whether `path` may name a file of an archive: relative, "/"-separated names of at most 255
/// characters in all, none empty, "." or "..", no backslash or control character.
pub fn safe_path(path: &str) -> bool {
    !path.is_empty()
        && path.chars().count() <= 255
        && !path.starts_with('/')
        && !path.chars().any(|c| c == '\\' || c.is_control())
        && path.split('/').all(|name| !matches!(name, "" | "." | ".."))
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn drain(mut rx: mpsc::Receiver<Received>) -> Vec<Received> {
        let mut out = Vec::new();
        while let Some(r) = rx.recv().await {
            out.push(r);
        }
        out
    }

    fn joined(pieces: &[Received], path: &str) -> String {
        let bytes: Vec<u8> = pieces
            .iter()
            .filter_map(|p| p.as_ref().ok())
            .filter(|p| p.path == path)
            .flat_map(|p| p.data.to_vec())
            .collect();
        String::from_utf8(bytes).unwrap()
    }

    #[tokio::test]
    async fn a_json_array_is_valid_json_whatever_its_length_and_comes_in_bounded_pieces() {
        for n in [0usize, 1, 3, 2_000] {
            let (sink, rx) = channel(4);
            let reader = tokio::spawn(drain(rx));
            let mut array = sink.json_array("items.json");
            for i in 0..n {
                array
                    .push(&serde_json::json!({"i": i, "text": "слово ".repeat(20)}))
                    .await
                    .unwrap();
            }
            assert_eq!(array.finish().await.unwrap(), n as u64);
            drop(sink);
            let pieces = reader.await.unwrap();
            let items: Vec<serde_json::Value> =
                serde_json::from_str(&joined(&pieces, "items.json")).unwrap();
            assert_eq!(items.len(), n);
            if n > 0 {
                assert_eq!(items[n - 1]["i"], n - 1);
            }
            for p in pieces.iter().flatten() {
                assert!(p.data.len() < 2 * PIECE_BYTES, "a piece of {} bytes", p.data.len());
            }
            if n == 2_000 {
                assert!(pieces.len() > 5, "a long list comes in several pieces");
            }
        }
    }

    #[tokio::test]
    async fn a_large_file_is_cut_and_joins_back_and_a_failure_reaches_the_reader() {
        let (sink, rx) = channel(2);
        let reader = tokio::spawn(drain(rx));
        let big = "ж".repeat(100_000);
        sink.file("big.md", big.clone()).await.unwrap();
        sink.json("small.json", &serde_json::json!({"a": 1})).await.unwrap();
        sink.fail("the database is away").await;
        drop(sink);
        let pieces = reader.await.unwrap();
        assert_eq!(joined(&pieces, "big.md"), big);
        assert_eq!(joined(&pieces, "small.json"), "{\n  \"a\": 1\n}\n");
        assert_eq!(pieces.last(), Some(&Err(ExportError::Failed("the database is away".into()))));
    }

    #[tokio::test]
    async fn a_reader_that_left_stops_the_writer() {
        let (sink, rx) = channel(1);
        drop(rx);
        assert_eq!(sink.file("a.json", "{}").await, Err(ExportError::Abandoned));
    }

    #[test]
    fn only_relative_plain_paths_are_safe() {
        for ok in ["account.json", "library/2026-12-05 Растения.md", "a/b/c.json"] {
            assert!(safe_path(ok), "{ok}");
        }
        for bad in ["", "/etc/passwd", "../x", "a/../b", "a//b", "a\\b", "a/./b", "x\n", "a/"] {
            assert!(!safe_path(bad), "{bad:?}");
        }
        assert!(!safe_path(&"a".repeat(256)));
    }
}
