//! The balancer's own rules: targets, what reads as never sent (ejection: `backend/tests.rs`).

use super::*;

#[test]
fn a_target_is_one_url_or_a_list() {
    let t = targets("http://auth:50051").unwrap();
    assert_eq!(t, vec![Target { host: "auth".into(), port: 50051 }]);
    let t = targets("http://10.0.0.1:1, http://[::1]:2,,https://x").unwrap();
    assert_eq!(
        t,
        vec![
            Target { host: "10.0.0.1".into(), port: 1 },
            Target { host: "::1".into(), port: 2 },
            Target { host: "x".into(), port: 443 },
        ]
    );
    assert!(targets("").is_err());
    assert!(targets("http://").is_err());
}

#[test]
fn only_what_certainly_was_not_processed_reads_never_sent() {
    let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
    assert!(never_sent(&refused));
    let wrapped = tonic::Status::from_error(Box::new(refused));
    assert!(never_sent(&wrapped));
    assert!(never_sent(&h2::Error::from(h2::Reason::REFUSED_STREAM)));
    assert!(!never_sent(&std::io::Error::from(std::io::ErrorKind::ConnectionReset)));
    // A GOAWAY we read locally (not the server's) says nothing about the stream.
    assert!(!never_sent(&h2::Error::from(h2::Reason::NO_ERROR)));
    assert!(!never_sent(&tonic::Status::unavailable("busy")));
}
