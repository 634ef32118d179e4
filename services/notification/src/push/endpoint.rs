//! Which push endpoints the service calls. A subscription's endpoint is a URL a browser hands
//! in, so it must not become a way to make the server call hosts inside the network: endpoints
//! are https on public addresses only — checked when a subscription is added (an address
//! literal, or a name resolving to private addresses, is refused with a reason) and again at
//! every connection, through a resolver that drops every non-public address (a name that
//! resolved publicly yesterday cannot point inside today). A development platform
//! (`notification.push_allow_loopback`, `skillup up`) also takes http and https on loopback.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// Which addresses push requests may go to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reach {
    /// Loopback addresses too, over http or https (development).
    pub loopback: bool,
}

/// Longest endpoint accepted.
pub const MAX_ENDPOINT: usize = 2_048;

impl Reach {
    /// Whether a push request may go to `ip`.
    pub fn allows(self, ip: IpAddr) -> bool {
        is_public(ip) || (self.loopback && canonical(ip).is_loopback())
    }

    /// The endpoint's origin (`scheme://host[:port]`, the VAPID audience), or why it is refused.
    pub fn check(self, endpoint: &str) -> Result<String, &'static str> {
        if endpoint.len() > MAX_ENDPOINT {
            return Err("is longer than 2,048 characters");
        }
        let url = reqwest::Url::parse(endpoint).map_err(|_| "is not a URL")?;
        if !url.username().is_empty() || url.password().is_some() {
            return Err("carries credentials");
        }
        let host = url.host_str().filter(|h| !h.is_empty()).ok_or("has no host")?;
        let literal = match host.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>() {
            Ok(ip) => Some(ip),
            Err(_) => {
                let name = host.trim_end_matches('.').to_ascii_lowercase();
                (name == "localhost" || name.ends_with(".localhost"))
                    .then_some(IpAddr::V4(Ipv4Addr::LOCALHOST))
            }
        };
        let loopback = literal.is_some_and(|ip| canonical(ip).is_loopback());
        match url.scheme() {
            "https" => {}
            "http" if self.loopback && loopback => {}
            _ => return Err("is not https"),
        }
        if let Some(ip) = literal
            && !self.allows(ip)
        {
            return Err("is not on a public address");
        }
        Ok(url.origin().ascii_serialization())
    }
}

/// An IPv4 address written as IPv6 (`::ffff:10.0.0.1`) is judged as the IPv4 address.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// An address on the public internet: not private, shared (CGNAT), loopback, link-local,
/// unspecified, multicast, broadcast, documentation, benchmarking or reserved space.
pub fn is_public(ip: IpAddr) -> bool {
    match canonical(ip) {
        IpAddr::V4(v4) => public_v4(v4),
        IpAddr::V6(v6) => public_v6(v6),
    }
}

fn public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    !(ip.is_private()
        || ip.is_loopback()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_multicast()
        || ip.is_broadcast()
        || ip.is_documentation()
        || a == 0
        || (a == 100 && (64..128).contains(&b)) // shared address space (CGNAT)
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments
        || (a == 198 && (b == 18 || b == 19)) // benchmarking
        || a >= 240) // reserved
}

fn public_v6(ip: Ipv6Addr) -> bool {
    let first = ip.segments()[0];
    !(ip.is_loopback()
        || ip.is_unspecified()
        || ip.is_multicast()
        || (first & 0xfe00) == 0xfc00 // unique local
        || (first & 0xffc0) == 0xfe80 // link-local
        || first == 0x2001 && ip.segments()[1] == 0x0db8 // documentation
        || first == 0x0064 && ip.segments()[1] == 0xff9b // NAT64 (reaches IPv4 inside)
        || ip.to_ipv4().is_some()) // IPv4-compatible and -mapped (mapped handled above)
}

/// The push client's resolver: the system's answers without the addresses [`Reach`] refuses;
/// a name left with none fails to connect.
#[derive(Debug, Clone, Copy)]
pub struct Resolver(pub Reach);

impl reqwest::dns::Resolve for Resolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let reach = self.0;
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let found: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await?
                .filter(|a| reach.allows(a.ip()))
                .collect();
            if found.is_empty() {
                return Err(format!("{host} has no public address").into());
            }
            Ok(Box::new(found.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// Whether `host` resolves only to addresses `reach` allows: `Some(false)` when it resolves
/// to some it does not; `None` when it cannot be resolved now, within 2 s (judged at delivery).
pub async fn resolves_within(reach: Reach, host: &str) -> Option<bool> {
    // A resolver that does not answer soon is judged at delivery, not waited for here.
    let lookup = tokio::net::lookup_host((host, 443));
    let found = tokio::time::timeout(std::time::Duration::from_secs(2), lookup).await.ok()?.ok()?;
    let ips: Vec<IpAddr> = found.map(|a| a.ip()).collect();
    (!ips.is_empty()).then(|| ips.iter().all(|ip| reach.allows(*ip)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SERVE: Reach = Reach { loopback: false };
    const UP: Reach = Reach { loopback: true };

    #[test]
    fn only_https_on_public_addresses_unless_developing_on_loopback() {
        let ok = "https://fcm.googleapis.com/fcm/send/abc:def";
        assert_eq!(SERVE.check(ok).unwrap(), "https://fcm.googleapis.com");
        assert_eq!(
            SERVE.check("https://push.example:8443/x").unwrap(),
            "https://push.example:8443"
        );
        assert_eq!(SERVE.check("https://8.8.8.8/x").unwrap(), "https://8.8.8.8");
        for (bad, why) in [
            ("http://push.example/x", "is not https"),
            ("ftp://push.example/x", "is not https"),
            ("not a url", "is not a URL"),
            ("https://user:pw@push.example/x", "carries credentials"),
            ("https://10.0.0.8/x", "is not on a public address"),
            ("https://169.254.169.254/latest/meta-data", "is not on a public address"),
            ("https://127.0.0.1:9/x", "is not on a public address"),
            ("https://localhost/x", "is not on a public address"),
            ("https://[::1]/x", "is not on a public address"),
            ("https://[::ffff:192.168.1.1]/x", "is not on a public address"),
            ("https://[fd00::1]/x", "is not on a public address"),
            ("https://100.64.1.1/x", "is not on a public address"),
            ("http://127.0.0.1:9/x", "is not https"),
        ] {
            assert_eq!(SERVE.check(bad), Err(why), "{bad}");
        }
        assert_eq!(
            SERVE.check(&format!("https://a.example/{}", "x".repeat(2_048))),
            Err("is longer than 2,048 characters")
        );
        // Development: loopback over http or https, nothing else private.
        assert_eq!(UP.check("http://127.0.0.1:9/p/1").unwrap(), "http://127.0.0.1:9");
        assert_eq!(UP.check("http://localhost:9/p/1").unwrap(), "http://localhost:9");
        assert_eq!(UP.check("https://[::1]:9/p/1").unwrap(), "https://[::1]:9");
        assert_eq!(UP.check("http://10.0.0.8/x"), Err("is not https"));
        assert_eq!(UP.check("https://10.0.0.8/x"), Err("is not on a public address"));
        assert_eq!(UP.check("http://push.example/x"), Err("is not https"));
    }

    #[tokio::test]
    async fn the_resolver_drops_what_is_not_allowed() {
        use reqwest::dns::Resolve as _;
        let name = |h: &str| reqwest::dns::Name::from_str(h).unwrap();
        use std::str::FromStr as _;
        assert!(Resolver(SERVE).resolve(name("localhost")).await.is_err());
        let found: Vec<SocketAddr> =
            Resolver(UP).resolve(name("localhost")).await.unwrap().collect();
        assert!(!found.is_empty() && found.iter().all(|a| a.ip().is_loopback()));
        assert_eq!(resolves_within(SERVE, "localhost").await, Some(false));
        assert_eq!(resolves_within(UP, "localhost").await, Some(true));
    }
}
