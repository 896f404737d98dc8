//! TLS on the client listener (`tls-listen`), with rustls: the server's
//! certificate chain and key from PEM files, and, with `tls-client-ca`,
//! mutual TLS: a client must present a certificate issued by that CA, and
//! registers only under a ClientName its certificate is valid for (as a
//! DNS name in its subject alternative names).
//!
//! The record layer runs in the connection's own read and write paths
//! (conn.rs), on the shard's thread, driven by hand over the glommio
//! stream: no extra thread, no extra copy beyond rustls' own buffers.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The TLS listener's configuration, when `[server] tls-listen` is set,
/// from the files the section names (read now: at start, at a reload).
pub fn from_section(sv: &crate::config::ServerSection) -> Result<Option<Arc<ServerConfig>>, String> {
    match (&sv.tls_listen, &sv.tls_certificate, &sv.tls_key) {
        (Some(_), Some(cert), Some(key)) => server_config(cert, key, sv.tls_client_ca.as_deref()).map(Some),
        _ => Ok(None),
    }
}

/// The server side's configuration from the files named in `[server]`.
pub fn server_config(cert: &Path, key: &Path, client_ca: Option<&Path>) -> Result<Arc<ServerConfig>, String> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| format!("tls-certificate {}: {e}", cert.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("tls-certificate {}: {e}", cert.display()))?;
    if chain.is_empty() {
        return Err(format!("tls-certificate {}: no certificate in the file", cert.display()));
    }
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| format!("tls-key {}: {e}", key.display()))?;
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            for c in CertificateDer::pem_file_iter(ca).map_err(|e| format!("tls-client-ca {}: {e}", ca.display()))? {
                let c = c.map_err(|e| format!("tls-client-ca {}: {e}", ca.display()))?;
                roots.add(c).map_err(|e| format!("tls-client-ca {}: {e}", ca.display()))?;
            }
            if roots.is_empty() {
                return Err(format!("tls-client-ca {}: no certificate in the file", ca.display()));
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
                .build()
                .map_err(|e| format!("tls-client-ca {}: {e}", ca.display()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let config = builder
        .with_single_cert(chain, key)
        .map_err(|e| format!("tls-certificate and tls-key do not go together: {e}"))?;
    Ok(Arc::new(config))
}

/// Whether a client certificate (already verified against the CA) is
/// valid for `name`, as a DNS name.
pub fn certificate_names(cert: &CertificateDer<'_>, name: &str) -> bool {
    let Ok(server_name) = ServerName::try_from(name) else { return false };
    let Ok(end) = webpki::EndEntityCert::try_from(cert) else { return false };
    end.verify_is_valid_for_subject_name(&server_name).is_ok()
}
