//! The admin client's TLS dial: a TCP connection, then a rustls handshake that offers `h2`
//! (gRPC needs it) and verifies the server against the cluster's CA bundle only, never the
//! system's roots. The server name is the host of the address dialled (a DNS name or an IP
//! address), which the operator's certificates cover.

use std::future::Future;
use std::sync::Arc;

use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

/// A client configuration trusting exactly the certificates of `bundle_pem`.
pub fn client_config(bundle_pem: &str) -> Result<Arc<rustls::ClientConfig>, String> {
    let mut roots = rustls::RootCertStore::empty();
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(bundle_pem.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|e| format!("the CA bundle is not PEM: {e}"))?;
    let (added, _ignored) = roots.add_parsable_certificates(certs);
    if added == 0 {
        return Err("the CA bundle holds no usable CA certificate".to_string());
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS set-up: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

/// The host of `host:port`, `[v6]:port` or a URI naming one, as a TLS server name.
fn server_name(address: &str) -> Result<ServerName<'static>, String> {
    let rest = address
        .strip_prefix("https://")
        .or_else(|| address.strip_prefix("http://"))
        .unwrap_or(address);
    let authority = rest.split('/').next().unwrap_or(rest);
    let host = if let Some(v6) = authority.strip_prefix('[') {
        v6.split(']').next().unwrap_or(v6)
    } else {
        authority.rsplit_once(':').map_or(authority, |(h, _)| h)
    };
    ServerName::try_from(host.to_string())
        .map_err(|e| format!("{host:?} is no TLS server name: {e}"))
}

/// A tonic connector dialling `address` over TLS, verified against `bundle_pem`.
#[allow(clippy::type_complexity)]
pub fn connector(
    address: &str,
    bundle_pem: &str,
) -> Result<
    impl tower::Service<
            http::Uri,
            Response = TokioIo<TlsStream<TcpStream>>,
            Error = std::io::Error,
            Future = impl Future<Output = std::io::Result<TokioIo<TlsStream<TcpStream>>>> + Send,
        > + Send
        + 'static,
    String,
> {
    let tls = TlsConnector::from(client_config(bundle_pem)?);
    let name = server_name(address)?;
    Ok(tower::service_fn(move |uri: http::Uri| {
        let tls = tls.clone();
        let name = name.clone();
        async move {
            let host = uri.host().unwrap_or_default().trim_matches(['[', ']']);
            let port = uri.port_u16().unwrap_or(443);
            let tcp = TcpStream::connect((host, port)).await?;
            tcp.set_nodelay(true)?;
            let stream = tls.connect(name, tcp).await?;
            Ok(TokioIo::new(stream))
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_server_name_is_the_dialled_host() {
        for (a, want) in [
            ("demo.prod.svc:8081", "demo.prod.svc"),
            ("http://127.0.0.1:9", "127.0.0.1"),
            ("[::1]:8081", "::1"),
        ] {
            let n = server_name(a).expect("name");
            assert_eq!(n.to_str(), want, "{a}");
        }
    }

    #[test]
    fn a_bundle_without_certificates_is_refused() {
        assert!(client_config("").is_err());
        assert!(client_config(
            "-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n"
        )
        .is_err());
    }
}
