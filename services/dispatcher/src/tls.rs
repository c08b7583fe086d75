//! SMPP over TLS (`smpps://`): the client side of the handshake, with the server's
//! certificate verified against the web PKI roots or the carrier's own CA
//! (`tls_ca_file`), under the URL's host name or `tls_server_name`. Nothing is ever
//! accepted unverified.

use crate::config::CarrierConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use std::sync::Arc;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

/// The connector for `carrier` and the name its server must prove; `Err` with the reason
/// for settings that cannot work (checked at start).
pub fn connector(carrier: &CarrierConfig) -> Result<(TlsConnector, ServerName<'static>), String> {
    let mut roots = rustls::RootCertStore::empty();
    match &carrier.tls_ca_file {
        Some(path) => {
            let certs = CertificateDer::pem_file_iter(path)
                .map_err(|e| format!("tls_ca_file {path}: {e}"))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("tls_ca_file {path}: {e}"))?;
            if certs.is_empty() {
                return Err(format!("tls_ca_file {path}: no certificate in it"));
            }
            for c in certs {
                roots
                    .add(c)
                    .map_err(|e| format!("tls_ca_file {path}: {e}"))?;
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("tls: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let host = match &carrier.tls_server_name {
        Some(n) => n.clone(),
        None => host_of(&carrier.url).to_string(),
    };
    let name =
        ServerName::try_from(host.clone()).map_err(|e| format!("tls server name {host:?}: {e}"))?;
    Ok((TlsConnector::from(Arc::new(config)), name))
}

/// `host` of `smpps://host:port` (brackets of an IPv6 literal removed).
fn host_of(url: &str) -> &str {
    let addr = url
        .trim_start_matches("smpps://")
        .trim_start_matches("smpp://")
        .trim_end_matches('/');
    let host = match addr.rsplit_once(':') {
        Some((h, port)) if port.chars().all(|c| c.is_ascii_digit()) => h,
        _ => addr,
    };
    host.trim_start_matches('[').trim_end_matches(']')
}

/// Runs the TLS handshake for `carrier` over `socket`.
pub async fn handshake(
    carrier: &CarrierConfig,
    socket: TcpStream,
) -> Result<TlsStream<TcpStream>, String> {
    let (connector, name) = connector(carrier)?;
    connector
        .connect(name, socket)
        .await
        .map_err(|e| format!("tls handshake: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_server_name_is_the_urls_host_unless_configured() {
        assert_eq!(host_of("smpps://smsc.example.net:3550"), "smsc.example.net");
        assert_eq!(host_of("smpps://127.0.0.1:3550/"), "127.0.0.1");
        assert_eq!(host_of("smpps://[::1]:3550"), "::1");
        let mut c = CarrierConfig::new("a", "smpps://10.0.0.5:3550", "id", "pw");
        assert!(connector(&c).is_ok(), "an IP address is a valid name");
        c.tls_server_name = Some("smsc.example.net".into());
        assert!(connector(&c).is_ok());
        c.tls_ca_file = Some("/nonexistent/ca.pem".into());
        assert!(connector(&c).err().unwrap().contains("tls_ca_file"));
    }
}
