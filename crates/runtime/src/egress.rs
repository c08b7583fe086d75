//! Outbound HTTP to addresses a caller chose (a message's `callback_url`): never to
//! loopback, private, link-local, shared (CGNAT), multicast, unspecified or
//! reserved addresses (the 169.254.169.254 metadata service included), unless the host is
//! allowlisted by the operator.
//!
//! The check is made on the addresses the connection will use: [`guarded_client`]
//! resolves names itself and drops every internal address before reqwest connects, so a
//! name that resolves to a public address once and to an internal one later (DNS
//! rebinding) cannot slip through between a check and the connection. A URL whose host
//! is an IP literal never reaches a resolver, so [`check_url`] checks it before the call.
//! The client follows no redirects: a 3xx is an answer, not a new destination.

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

/// Whether `ip` is an address a caller-chosen URL may not reach.
pub fn is_internal(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_internal_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_internal_v4(v4);
            }
            let s = v6.segments();
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00 // unique local fc00::/7
                || (s[0] & 0xffc0) == 0xfe80 // link-local fe80::/10
                || (s[0] & 0xffc0) == 0xfec0 // site-local fec0::/10
                || (s[0] == 0x64 && s[1] == 0xff9b && is_internal_v4(embedded_v4(v6))) // NAT64
                || (s[0] == 0x2001 && s[1] == 0x0db8) // documentation
        }
    }
}

fn embedded_v4(v6: Ipv6Addr) -> Ipv4Addr {
    let o = v6.octets();
    Ipv4Addr::new(o[12], o[13], o[14], o[15])
}

fn is_internal_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local() // 169.254/16: cloud metadata
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || a == 0 // "this network"
        || (a == 100 && (64..128).contains(&b)) // shared address space (CGNAT)
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments
        || (a == 198 && (18..20).contains(&b)) // benchmarking
        || a >= 240 // reserved
}

/// Refuses `url` when its host is an IP literal in an internal range and not allowlisted
/// (names are checked when they are resolved, by [`guarded_client`]).
pub fn check_url(url: &str, allow: &HashSet<String>) -> Result<(), String> {
    let parsed = reqwest::Url::parse(url).map_err(|e| format!("not a URL: {e}"))?;
    let text = parsed
        .host_str()
        .ok_or("no host")?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_ascii_lowercase();
    let ip = text.parse::<IpAddr>().ok();
    match ip {
        Some(ip) if is_internal(ip) && !allow.contains(&text) => Err(format!(
            "{ip} is an internal address (loopback, private, link-local or reserved)"
        )),
        _ => Ok(()),
    }
}

/// Resolves names, keeping only addresses a caller-chosen URL may reach.
#[derive(Debug, Clone)]
struct Guard {
    allow: Arc<HashSet<String>>,
}

impl Resolve for Guard {
    fn resolve(&self, name: Name) -> Resolving {
        let allow = self.allow.clone();
        Box::pin(async move {
            let host = name.as_str().to_ascii_lowercase();
            let all: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let allowed = allow.contains(&host);
            let ok: Vec<SocketAddr> = all
                .iter()
                .copied()
                .filter(|a| allowed || !is_internal(a.ip()))
                .collect();
            if ok.is_empty() {
                return Err(format!(
                    "{host} resolves only to internal addresses ({} found)",
                    all.len()
                )
                .into());
            }
            Ok(Box::new(ok.into_iter()) as Addrs)
        })
    }
}

/// A client for caller-chosen URLs: internal addresses refused at resolution unless the
/// host is in `allow` (names or IP literals, as written in URLs), no redirects followed.
pub fn guarded_client(allow: &HashSet<String>) -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .dns_resolver(Arc::new(Guard {
            allow: Arc::new(allow.clone()),
        }))
        .build()
        .expect("a client with default TLS settings builds")
}

/// A client for operator-configured URLs: any address, no redirects followed.
pub fn plain_client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("a client with default TLS settings builds")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_ranges_are_recognised_and_public_ones_pass() {
        for internal in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "224.0.0.1",
            "::1",
            "::",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "64:ff9b::a00:1",
        ] {
            assert!(is_internal(internal.parse().unwrap()), "{internal}");
        }
        for public in ["1.1.1.1", "8.8.8.8", "93.184.216.34", "2606:4700::1111"] {
            assert!(!is_internal(public.parse().unwrap()), "{public}");
        }
    }

    #[test]
    fn literal_hosts_are_checked_unless_allowlisted() {
        let none = HashSet::new();
        for url in [
            "https://127.0.0.1/cb",
            "https://169.254.169.254/latest/meta-data",
            "http://[::1]:8080/",
            "https://10.0.0.5/",
        ] {
            assert!(check_url(url, &none).is_err(), "{url}");
        }
        assert!(check_url("https://example.com/cb", &none).is_ok());
        let allow: HashSet<String> = ["127.0.0.1".to_string()].into();
        assert!(check_url("http://127.0.0.1:9000/cb", &allow).is_ok());
    }

    async fn receiver() -> (u16, Arc<std::sync::atomic::AtomicUsize>) {
        let hits = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let h = hits.clone();
        let app = axum::Router::new()
            .route(
                "/cb",
                axum::routing::post(move || {
                    h.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    async { "ok" }
                }),
            )
            .route(
                "/moved",
                axum::routing::post(|| async {
                    axum::response::Redirect::temporary("http://127.0.0.1:1/elsewhere")
                }),
            );
        tokio::spawn(async move { axum::serve(listener, app).await });
        (port, hits)
    }

    #[tokio::test]
    async fn a_name_that_resolves_to_loopback_is_refused_at_connection() {
        let (port, hits) = receiver().await;
        let client = guarded_client(&HashSet::new());
        // "localhost" is no IP literal: only the resolver can catch it.
        let url = format!("http://localhost:{port}/cb");
        assert!(check_url(&url, &HashSet::new()).is_ok());
        let err = client.post(&url).send().await.unwrap_err();
        assert!(format!("{err:?}").contains("internal addresses"), "{err:?}");
        assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), 0);
        // Allowlisted, the same call goes through.
        let allowed = guarded_client(&["localhost".to_string()].into());
        let r = allowed.post(&url).send().await.unwrap();
        assert!(r.status().is_success());
        assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn redirects_are_not_followed() {
        let (port, _) = receiver().await;
        let client = guarded_client(&["localhost".to_string()].into());
        let r = client
            .post(format!("http://localhost:{port}/moved"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), reqwest::StatusCode::TEMPORARY_REDIRECT);
    }
}
