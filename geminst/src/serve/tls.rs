//! The TLS configuration: TLS 1.3 and 1.2 (spec v0.16.1 §4.1: servers MUST use TLS 1.2 or
//! higher and SHOULD use 1.3), rustls with ring, no client authentication.

use std::sync::Arc;

use anyhow::Result;
use rustls::{ServerConfig, crypto::ring::cipher_suite as cs, server::ServerSessionMemoryCache};

use super::certs::CertKey;
use crate::exit::BadInput;

/// Sessions kept for resumption (TLS 1.2 session IDs and TLS 1.3 stateful tickets).
const SESSION_CACHE: usize = 4096;

/// The server's cipher suites, in its order of preference. All are strong; the SHA-256 suites come
/// first because ring hashes SHA-256 with the CPU's SHA extensions but SHA-384 in portable code,
/// which made the SHA-384 suite clients usually prefer cost a third of the handshake's CPU beyond
/// the public-key operations (measured by `benches/serve_cpu.rs`).
static SUITES: &[rustls::SupportedCipherSuite] = &[
    cs::TLS13_AES_128_GCM_SHA256,
    cs::TLS13_CHACHA20_POLY1305_SHA256,
    cs::TLS13_AES_256_GCM_SHA384,
    cs::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
    cs::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
    cs::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
    cs::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
    cs::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
    cs::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
];

pub fn server_config(cert: CertKey) -> Result<Arc<ServerConfig>> {
    let provider = Arc::new(rustls::crypto::CryptoProvider {
        cipher_suites: SUITES.to_vec(),
        ..rustls::crypto::ring::default_provider()
    });
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_single_cert(cert.chain, cert.key)
        .map_err(|e| BadInput(format!("certificate {}: {e}", cert.cert_path.display())))?;
    config.ignore_client_order = true;
    config.session_storage = ServerSessionMemoryCache::new(SESSION_CACHE);
    // One TLS 1.3 ticket is enough for a client to resume; rustls's default of two costs an extra
    // ticket's work and bytes on every full handshake.
    config.send_tls13_tickets = 1;
    Ok(Arc::new(config))
}

/// The protocol version as the log names it.
pub fn version_name(v: rustls::ProtocolVersion) -> &'static str {
    match v {
        rustls::ProtocolVersion::TLSv1_3 => "TLSv1.3",
        rustls::ProtocolVersion::TLSv1_2 => "TLSv1.2",
        _ => "other",
    }
}
