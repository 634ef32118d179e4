//! The edge under abuse (issue 26.3 and 26.4): client-chosen values never become metric
//! series, unknown paths spend the rate budget, and connections that say nothing, trickle or
//! idle are closed on time while real requests are served. Its own test binary: the metrics
//! recorder is per process, so the series counts here are this file's alone.

mod edge_support;
use edge_support as support;

use std::{net::SocketAddr, time::Duration};

use futures::StreamExt;
use skillup_testkit::Kind;
use support::stack;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpSocket, TcpStream},
};

fn mt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

fn addr_of(base: &str) -> SocketAddr {
    let port: u16 = base.rsplit(':').next().unwrap().parse().unwrap();
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// A connection from another loopback address (`127.0.0.n`), as another client would be.
async fn connect_from(n: u8, to: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::from(([127, 0, 0, n], 0))).unwrap();
    socket.connect(to).await.unwrap()
}

/// Reads until the server closes the connection; what it sent, or `None` if it was still
/// open after `within`.
async fn closed_within(s: &mut TcpStream, within: Duration) -> Option<String> {
    let mut got = Vec::new();
    let read = tokio::time::timeout(within, async {
        let mut buf = [0u8; 4096];
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    read.ok().map(|()| String::from_utf8_lossy(&got).into_owned())
}

/// The number of series in a Prometheus text page.
fn series(page: &str) -> usize {
    page.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty()).count()
}

#[test]
fn ten_thousand_junk_requests_leave_the_metric_series_unchanged() {
    mt().block_on(async {
        let s = stack(Kind::Embedded, |_| {}).await;
        let grpc = format!("http://{}", s.grpc_addr);
        let h2 = reqwest::Client::builder().http2_prior_knowledge().build().unwrap();
        let junk = |i: usize| {
            let (http, h2, base, grpc) = (s.http.clone(), h2.clone(), s.base.clone(), grpc.clone());
            async move {
                match i % 3 {
                    // A made-up method of 200 characters, unique per request.
                    0 => {
                        let method = format!("M{i:0>199}");
                        let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
                        http.request(m, format!("{base}/nowhere")).send().await.unwrap();
                    }
                    // A path no route has.
                    1 => {
                        http.get(format!("{base}/junk/{i}")).send().await.unwrap();
                    }
                    // A gRPC method no service has.
                    _ => {
                        h2.post(format!("{grpc}/junk.Service{i}/Method{i}"))
                            .header("content-type", "application/grpc")
                            .header("te", "trailers")
                            .body(vec![0u8; 5])
                            .send()
                            .await
                            .unwrap();
                    }
                }
            }
        };
        // The first of each kind makes its `other` / `unmatched` series.
        for i in 0..3 {
            junk(i).await;
        }
        let before = s.get("/metrics", None).await.1.as_str().unwrap().to_owned();
        futures::stream::iter(3..10_003).map(junk).buffer_unordered(32).collect::<Vec<_>>().await;
        let after = s.get("/metrics", None).await.1.as_str().unwrap().to_owned();
        assert_eq!(series(&after), series(&before), "new series:\n{after}");
        assert!(after.contains("method=\"other\""), "{after}");
        assert!(after.contains("service=\"other\""), "{after}");
        assert!(after.len() < 2 * before.len(), "{} → {} bytes", before.len(), after.len());
    });
}

#[test]
fn unknown_paths_and_methods_spend_the_ip_budget() {
    mt().block_on(async {
        let s = stack(Kind::Embedded, |c| {
            c.edge.rate.ip_per_sec = 1;
            c.edge.rate.ip_burst = 5;
        })
        .await;
        let mut statuses = Vec::new();
        for i in 0..10 {
            let res = s.http.get(s.url(&format!("/junk/{i}"))).send().await.unwrap();
            statuses.push(res.status().as_u16());
        }
        assert!(statuses.contains(&429), "{statuses:?}");
        let res = s.http.request(reqwest::Method::PUT, s.url("/healthz2")).send().await.unwrap();
        assert_eq!(res.status(), 429);
    });
}

#[test]
fn silent_slow_and_idle_connections_are_closed_on_time() {
    mt().block_on(async {
        let s = stack(Kind::Embedded, |c| {
            c.edge.header_timeout_ms = 1_000;
            c.edge.body_timeout_ms = 1_000;
            c.edge.idle_timeout_ms = 1_500;
            // No keep-alive comments: only being in flight keeps the stream below open.
            c.edge.sse_keepalive_ms = 60_000;
        })
        .await;
        let (token, _, _) = s.register().await;
        let edge = addr_of(&s.base);
        let soon = Duration::from_secs(6);

        // Says nothing at all.
        let mut silent = TcpStream::connect(edge).await.unwrap();
        // Starts a header section and stops.
        let mut slow_headers = TcpStream::connect(edge).await.unwrap();
        slow_headers.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n").await.unwrap();
        // A body of 100 bytes that sends 10.
        let mut trickle = TcpStream::connect(edge).await.unwrap();
        let head = format!(
            "POST /v1/echo HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {token}\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{{\"id\":\"a\""
        );
        trickle.write_all(head.as_bytes()).await.unwrap();
        // A chunked body that never sends a chunk.
        let mut chunked = TcpStream::connect(edge).await.unwrap();
        let head = format!(
            "POST /v1/echo HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {token}\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n"
        );
        chunked.write_all(head.as_bytes()).await.unwrap();
        // A keep-alive connection after one answered request.
        let mut kept = TcpStream::connect(edge).await.unwrap();
        kept.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n").await.unwrap();

        assert_eq!(closed_within(&mut silent, soon).await.as_deref(), Some(""), "silent");
        assert!(closed_within(&mut slow_headers, soon).await.is_some(), "slow headers");
        let answer = closed_within(&mut trickle, soon).await.expect("trickled body");
        assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
        let answer = closed_within(&mut chunked, soon).await.expect("empty chunked body");
        assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
        let answer = closed_within(&mut kept, soon).await.expect("idle keep-alive");
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");

        // A request in flight is not idle: a stream longer than the idle timeout is served.
        let res = s
            .http
            .get(s.url("/v1/count?count=2&interval_ms=2000"))
            .bearer_auth(&token)
            .header("accept", "text/event-stream")
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        let body = res.text().await.unwrap();
        assert_eq!(body.lines().filter(|l| l.starts_with("data:")).count(), 2, "{body}");
    });
}

#[test]
fn a_real_request_is_served_while_five_thousand_idle_connections_are_open() {
    mt().block_on(async {
        skillup_kit::raise_fd_limit();
        let s = stack(Kind::Embedded, |c| {
            c.edge.header_timeout_ms = 8_000;
            c.edge.max_connections_per_ip = 6_000;
        })
        .await;
        let edge = addr_of(&s.base);
        let idle: Vec<TcpStream> = futures::stream::iter(0..5_000)
            .map(|_| connect_from(2, edge))
            .buffer_unordered(64)
            .collect()
            .await;
        let (status, _, _) = s.get("/healthz", None).await;
        assert_eq!(status, 200, "served beside 5,000 idle connections");
        // And every one of them is closed on time.
        let closed = futures::stream::iter(idle)
            .map(|mut c| async move { closed_within(&mut c, Duration::from_secs(20)).await })
            .buffer_unordered(512)
            .filter(|r| std::future::ready(r.is_some()))
            .count()
            .await;
        assert_eq!(closed, 5_000);
    });
}

#[test]
fn connections_per_client_address_are_capped() {
    mt().block_on(async {
        let s = stack(Kind::Embedded, |c| c.edge.max_connections_per_ip = 20).await;
        let edge = addr_of(&s.base);
        let mut open = Vec::new();
        for _ in 0..20 {
            open.push(connect_from(3, edge).await);
        }
        // Accepted in order: once the 20 are in, a 21st from the address is closed at once.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let mut extra = connect_from(3, edge).await;
        assert!(closed_within(&mut extra, Duration::from_secs(3)).await.is_some());
        assert!(closed_within(&mut open[0], Duration::from_millis(300)).await.is_none());
        // Other clients are served.
        assert_eq!(s.get("/healthz", None).await.0, 200);
        // A closed connection frees its place.
        drop(open.pop());
        tokio::time::sleep(Duration::from_millis(300)).await;
        let mut again = connect_from(3, edge).await;
        again
            .write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
            .await
            .unwrap();
        let answer = closed_within(&mut again, Duration::from_secs(5)).await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    });
}

/// A plain GET from `127.0.0.n`; the status line's code.
async fn get_from(n: u8, to: SocketAddr, path: &str) -> u16 {
    let mut c = connect_from(n, to).await;
    let req = format!("GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n");
    c.write_all(req.as_bytes()).await.unwrap();
    let answer = closed_within(&mut c, Duration::from_secs(10)).await.expect("an answer");
    answer.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("{answer}"))
}

/// Issue 26.14: `/metrics` and `/readyz` answered on the public listener, where the Ingress
/// sends everyone.
#[test]
fn operations_endpoints_are_not_public() {
    mt().block_on(async {
        // Without an operations listener: only internal peers see them.
        let s =
            stack(Kind::Embedded, |c| c.edge.internal_cidrs = vec!["127.0.0.1/32".into()]).await;
        let edge = addr_of(&s.base);
        for path in ["/metrics", "/readyz"] {
            assert_eq!(get_from(2, edge, path).await, 404, "{path} from outside");
            assert_eq!(get_from(1, edge, path).await, 200, "{path} from inside");
        }
        assert_eq!(get_from(2, edge, "/healthz").await, 200, "liveness is public");

        // With one: the public listener keeps liveness only, the operations port has it all.
        let ops = loop {
            use std::hash::{BuildHasher, Hasher};
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_u32(std::process::id());
            let port = 20_000 + (h.finish() % 12_000) as u16;
            if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
                break SocketAddr::from(([127, 0, 0, 1], port));
            }
        };
        let mut config = s.config.clone();
        config.edge.ops_addr = Some(ops);
        let public = addr_of(&s.start_edge(config).await);
        for path in ["/metrics", "/readyz"] {
            assert_eq!(get_from(1, public, path).await, 404, "{path} on the public listener");
        }
        assert_eq!(get_from(1, public, "/healthz").await, 200);
        let mut ready = 0;
        for _ in 0..100 {
            if let Ok(c) = TcpStream::connect(ops).await {
                drop(c);
                ready = get_from(1, ops, "/readyz").await;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(ready, 200);
        assert_eq!(get_from(1, ops, "/metrics").await, 200);
    });
}

/// Kept from the attack testing of issue 26 (it held): malformed HTTP framing is refused with
/// 400 before anything runs, and JSON nested deeper than 128 is refused, not recursed into.
#[test]
fn malformed_requests_are_refused() {
    mt().block_on(async {
        let s = stack(Kind::Embedded, |_| {}).await;
        let (token, _, _) = s.register().await;
        let edge = addr_of(&s.base);
        let raw = |extra: &str, body: &str| {
            format!(
                "POST /v1/echo HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {token}\r\ncontent-type: application/json\r\nconnection: close\r\n{extra}\r\n{body}"
            )
        };
        for (what, req) in [
            (
                "content-length with transfer-encoding",
                raw("content-length: 4\r\ntransfer-encoding: chunked\r\n", "0\r\n\r\n"),
            ),
            ("two content-lengths", raw("content-length: 2\r\ncontent-length: 3\r\n", "{}")),
            ("a folded header", raw("x-folded: a\r\n b\r\ncontent-length: 2\r\n", "{}")),
        ] {
            let mut c = TcpStream::connect(edge).await.unwrap();
            c.write_all(req.as_bytes()).await.unwrap();
            let answer = closed_within(&mut c, Duration::from_secs(10)).await.expect(what);
            assert!(answer.starts_with("HTTP/1.1 400"), "{what}: {answer}");
        }
        assert_eq!(s.seen.calls.load(std::sync::atomic::Ordering::SeqCst), 0, "nothing reached a service");

        let deep = format!("{{\"id\":\"a\",\"x\":{}1{}}}", "[".repeat(100_000), "]".repeat(100_000));
        let res = s
            .http
            .post(s.url("/v1/echo"))
            .bearer_auth(&token)
            .header("content-type", "application/json")
            .body(deep)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 400);
    });
}
