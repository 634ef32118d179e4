//! Who is calling: the peer address, or — only when the peer is a configured trusted proxy —
//! the right-most address in `X-Forwarded-For` that is not itself a trusted proxy.

use std::net::{IpAddr, SocketAddr};

use http::HeaderMap;
use ipnet::IpNet;

/// Parses CIDRs already checked by config validation.
pub fn nets(list: &[String]) -> Vec<IpNet> {
    list.iter().filter_map(|n| n.parse().ok()).collect()
}

pub fn contains(nets: &[IpNet], ip: IpAddr) -> bool {
    let ip = canonical(ip);
    nets.iter().any(|n| n.contains(&ip))
}

/// `::ffff:a.b.c.d` is a.b.c.d.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

/// The client's address.
pub fn client_ip(peer: SocketAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    let peer_ip = canonical(peer.ip());
    if trusted.is_empty() || !contains(trusted, peer_ip) {
        return peer_ip;
    }
    let hops: Vec<IpAddr> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|s| s.trim().parse::<IpAddr>().ok())
        .collect();
    hops.into_iter().rev().map(canonical).find(|ip| !contains(trusted, *ip)).unwrap_or(peer_ip)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(xff: &str) -> HeaderMap {
        let mut m = HeaderMap::new();
        m.insert("x-forwarded-for", xff.parse().unwrap());
        m
    }

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies() {
        let peer: SocketAddr = "10.0.0.5:1234".parse().unwrap();
        let trusted = nets(&["10.0.0.0/24".into()]);
        assert_eq!(client_ip(peer, &h("1.2.3.4"), &[]), peer.ip(), "no trusted proxies");
        assert_eq!(client_ip(peer, &h("1.2.3.4"), &trusted).to_string(), "1.2.3.4");
        assert_eq!(
            client_ip(peer, &h("6.6.6.6, 1.2.3.4, 10.0.0.9"), &trusted).to_string(),
            "1.2.3.4",
            "a client cannot prepend its own hops"
        );
        let outsider: SocketAddr = "8.8.8.8:1".parse().unwrap();
        assert_eq!(client_ip(outsider, &h("1.2.3.4"), &trusted).to_string(), "8.8.8.8");
        assert_eq!(client_ip(peer, &h("garbage"), &trusted), peer.ip());
    }

    #[test]
    fn v4_mapped_v6_counts_as_v4() {
        let loopback = nets(&["127.0.0.0/8".into()]);
        assert!(contains(&loopback, "::ffff:127.0.0.1".parse().unwrap()));
        assert!(!contains(&loopback, "::1".parse().unwrap()));
    }
}
