//! The mesh's connections: the listener's (plaintext or TLS on one port, each connection's
//! peer learnt at the handshake) and the channels' (TLS to a server whose SPIFFE id is the
//! component asked for).

use std::{
    io,
    net::SocketAddr,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use futures::Stream;
use http::Uri;
use hyper_util::{
    client::legacy::connect::{Connected, Connection},
    rt::TokioIo,
};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    sync::mpsc,
};
use tokio_util::either::Either;

use super::{MeshConnectInfo, MeshTls, tls::peer_of};

/// How long a connection may take to say what it is and finish its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The first byte of a TLS record carrying a handshake.
const TLS_HANDSHAKE: u8 = 0x16;

/// A mesh connection, plaintext or TLS (`T`: the server or the client side of rustls), and
/// what is known of its peer.
pub struct MeshStream<T> {
    stream: Either<TcpStream, Box<T>>,
    info: MeshConnectInfo,
}

/// One accepted connection (tonic reads its [`MeshConnectInfo`] into every request).
pub type MeshIo = MeshStream<tokio_rustls::server::TlsStream<TcpStream>>;

/// A channel's connection.
pub type MeshClientIo = MeshStream<tokio_rustls::client::TlsStream<TcpStream>>;

impl<T> MeshStream<T> {
    /// What is known of the peer.
    pub fn info(&self) -> &MeshConnectInfo {
        &self.info
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncRead for MeshStream<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_read(cx, buf)
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncWrite for MeshStream<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

/// The listener's connections as tonic takes them: accepted on a task of their own, each
/// handshaken on its own task (a slow or silent peer holds up nobody), handed over when
/// ready. Without [`MeshTls`] every connection is plaintext, so every caller anonymous.
pub struct MeshIncoming {
    rx: mpsc::Receiver<io::Result<MeshIo>>,
}

impl MeshIncoming {
    pub fn new(listener: TcpListener, tls: Option<Arc<MeshTls>>) -> Self {
        let (tx, rx) = mpsc::channel(64);
        tokio::spawn(accept(listener, tls, tx));
        Self { rx }
    }
}

impl Stream for MeshIncoming {
    type Item = io::Result<MeshIo>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.rx.poll_recv(cx)
    }
}

async fn accept(
    listener: TcpListener,
    tls: Option<Arc<MeshTls>>,
    tx: mpsc::Sender<io::Result<MeshIo>>,
) {
    loop {
        // Ends when the server stops taking connections (the stream is dropped), closing the
        // listener with it.
        let (stream, remote) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of descriptors and the like: pause rather than spin.
                    tracing::warn!(error = %e, "accepting a gRPC connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = tx.closed() => return,
        };
        // A unary answer is headers, data and trailers: Nagle would hold the last of them for
        // the peer's delayed ACK (40 ms stalls at low concurrency).
        let _ = stream.set_nodelay(true);
        let Some(tls) = tls.clone() else {
            let info = MeshConnectInfo { remote: Some(remote), peer: None };
            if tx.send(Ok(MeshIo { stream: Either::Left(stream), info })).await.is_err() {
                return;
            }
            continue;
        };
        let tx = tx.clone();
        tokio::spawn(async move {
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake(stream, remote, &tls)).await {
                Ok(Ok(io)) => {
                    let _ = tx.send(Ok(io)).await;
                }
                Ok(Err(e)) => tracing::debug!(%remote, error = %e, "mesh handshake failed"),
                Err(_) => tracing::debug!(%remote, "mesh handshake timed out"),
            }
        });
    }
}

async fn handshake(stream: TcpStream, remote: SocketAddr, tls: &MeshTls) -> io::Result<MeshIo> {
    let mut first = [0u8; 1];
    let n = stream.peek(&mut first).await?;
    if n == 0 || first[0] != TLS_HANDSHAKE {
        let info = MeshConnectInfo { remote: Some(remote), peer: None };
        return Ok(MeshIo { stream: Either::Left(stream), info });
    }
    let acceptor = tokio_rustls::TlsAcceptor::from(tls.server_config());
    let stream = acceptor.accept(stream).await?;
    // Verified by the handshake against the mesh CA (a certificate that does not verify
    // fails it); absent when the peer offered none.
    let peer = stream.get_ref().1.peer_certificates().and_then(|c| c.first()).and_then(peer_of);
    let info = MeshConnectInfo { remote: Some(remote), peer };
    Ok(MeshIo { stream: Either::Right(Box::new(stream)), info })
}

/// A channel's connector: TCP to the URI's host and port, then — with [`MeshTls`] — TLS with
/// this component's certificate, refusing a server that shows no certificate of a component
/// of the mesh. (Which component does not matter to the caller: one listener may serve
/// several — `skillup up` serves all — and the caller check on the server side is what
/// guards the calls.)
#[derive(Clone)]
pub struct MeshConnector {
    tls: Option<Arc<MeshTls>>,
}

impl MeshConnector {
    /// Connects with `tls`; without it, plaintext (then the server sees an anonymous caller).
    pub fn new(tls: Option<Arc<MeshTls>>) -> Self {
        Self { tls }
    }
}

impl Connection for MeshClientIo {
    fn connected(&self) -> Connected {
        Connected::new()
    }
}

type ConnectFuture =
    Pin<Box<dyn Future<Output = io::Result<TokioIo<MeshClientIo>>> + Send + 'static>>;

impl tower::Service<Uri> for MeshConnector {
    type Response = TokioIo<MeshClientIo>;
    type Error = io::Error;
    type Future = ConnectFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let tls = self.tls.clone();
        Box::pin(async move {
            let bad = |m: String| io::Error::new(io::ErrorKind::InvalidInput, m);
            let host = uri.host().ok_or_else(|| bad(format!("{uri}: no host")))?;
            let host = host.trim_start_matches('[').trim_end_matches(']').to_owned();
            let port =
                uri.port_u16().unwrap_or(if uri.scheme_str() == Some("https") { 443 } else { 80 });
            let tcp = TcpStream::connect((host.as_str(), port)).await?;
            let _ = tcp.set_nodelay(true);
            let remote = tcp.peer_addr().ok();
            let Some(tls) = tls else {
                let info = MeshConnectInfo { remote, peer: None };
                return Ok(TokioIo::new(MeshClientIo { stream: Either::Left(tcp), info }));
            };
            // The name is not checked (see `MeshServerVerifier`); the SPIFFE id is, below.
            let name = rustls::pki_types::ServerName::try_from(host.clone()).unwrap_or_else(|_| {
                rustls::pki_types::ServerName::try_from("mesh.skillup").expect("a valid name")
            });
            let connector = tokio_rustls::TlsConnector::from(tls.client_config());
            let stream = connector.connect(name, tcp).await?;
            let server =
                stream.get_ref().1.peer_certificates().and_then(|c| c.first()).and_then(peer_of);
            if server.as_ref().is_none_or(|p| &*p.component == super::OPERATOR) {
                return Err(io::Error::new(
                    io::ErrorKind::PermissionDenied,
                    format!("{host}:{port} shows no certificate of a component of the mesh"),
                ));
            }
            let info = MeshConnectInfo { remote, peer: server };
            Ok(TokioIo::new(MeshClientIo { stream: Either::Right(Box::new(stream)), info }))
        })
    }
}
