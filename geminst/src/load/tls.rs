//! The client's TLS configuration.
//!
//! Gemini servers mostly present self-signed certificates and clients trust them on first use,
//! so no chain is validated. The server's handshake signature *is* checked against the key in
//! the certificate it sent, as any real client does: it is part of what a client spends per
//! handshake (one ECDSA or RSA verification), and without it a load generator would be cheaper
//! than the clients it stands for. A pinned SHA-256 fingerprint, when given, must match the
//! certificate.

use std::sync::{Arc, OnceLock};

use anyhow::{Context, Result};
use rustls::{
    ClientConfig, DigitallySignedStruct, SignatureScheme,
    client::{
        Resumption,
        danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    },
    crypto::{CryptoProvider, WebPkiSupportedAlgorithms},
    pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime, pem::PemObject},
};

use super::plan::{TlsSettings, TlsVersion};
use crate::exit::BadInput;

/// Sessions remembered for resumption when it is on; more than the distinct servers of any run.
const SESSION_CACHE: usize = 256;

/// The client configuration, and the fingerprint of the first certificate the servers showed.
pub struct ClientTls {
    pub config: Arc<ClientConfig>,
    verifier: Arc<TofuVerifier>,
}

impl ClientTls {
    pub fn new(settings: &TlsSettings) -> Result<Self> {
        let mut provider = rustls::crypto::ring::default_provider();
        // Offer AES-128-GCM first, as Chrome, Firefox and Go's crypto/tls do (rustls and OpenSSL
        // put AES-256 first). TLS_AES_128_GCM_SHA256 is the one suite every TLS 1.3 peer must
        // have (RFC 8446 §9.1), and its SHA-256 key schedule costs both sides less than SHA-384.
        provider.cipher_suites.sort_by_key(|s| !is_aes_128_gcm(s.suite()));
        let provider = Arc::new(provider);
        let verifier = Arc::new(TofuVerifier::new(settings.pin_sha256, settings.verify_signatures));
        let versions: &[&'static rustls::SupportedProtocolVersion] = match settings.version {
            Some(TlsVersion::Tls12) => &[&rustls::version::TLS12],
            Some(TlsVersion::Tls13) => &[&rustls::version::TLS13],
            None => rustls::ALL_VERSIONS,
        };
        let builder = ClientConfig::builder_with_provider(provider.clone() as Arc<CryptoProvider>)
            .with_protocol_versions(versions)
            .context("choosing TLS versions")?
            .dangerous()
            .with_custom_certificate_verifier(verifier.clone());
        let mut config = match &settings.client_cert {
            None => builder.with_no_client_auth(),
            Some(cc) => {
                let chain = CertificateDer::pem_file_iter(&cc.cert)
                    .and_then(|it| it.collect::<Result<Vec<_>, _>>())
                    .map_err(|e| {
                        BadInput(format!("reading client certificate {}: {e}", cc.cert.display()))
                    })?;
                if chain.is_empty() {
                    return Err(BadInput(format!("no certificate in {}", cc.cert.display())).into());
                }
                let key = PrivateKeyDer::from_pem_file(&cc.key)
                    .map_err(|e| BadInput(format!("reading client key {}: {e}", cc.key.display())))?;
                builder.with_client_auth_cert(chain, key).map_err(|e| {
                    BadInput(format!(
                        "client certificate {} with key {}: {e}",
                        cc.cert.display(),
                        cc.key.display()
                    ))
                })?
            }
        };
        config.resumption = if settings.resumption {
            Resumption::in_memory_sessions(SESSION_CACHE)
        } else {
            Resumption::disabled()
        };
        Ok(Self { config: Arc::new(config), verifier })
    }

    /// SHA-256 (hex) of the first certificate a server presented during the run.
    pub fn first_certificate_sha256(&self) -> Option<String> {
        self.verifier.first_seen_sha256().map(str::to_string)
    }
}

fn is_aes_128_gcm(suite: rustls::CipherSuite) -> bool {
    use rustls::CipherSuite as S;
    matches!(
        suite,
        S::TLS13_AES_128_GCM_SHA256
            | S::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
            | S::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256
    )
}

/// The name to send in SNI (and to look sessions up by): `sni` when given, else the URL's host.
/// An IP address is a valid name here; rustls then sends no SNI, as RFC 6066 §3 requires.
pub fn server_name(host: &str, sni: Option<&str>) -> Result<ServerName<'static>, String> {
    let name = sni.unwrap_or(host);
    ServerName::try_from(name.to_string()).map_err(|_| format!("{name:?} is not a valid server name for TLS"))
}

/// Accepts a server's certificate as Gemini does (trust on first use: no chain to a CA), or only
/// the one whose SHA-256 is pinned; checks the handshake signatures unless told not to, as a real
/// client does; remembers the first certificate it saw. The load generator's, and the tests' and
/// benchmarks' TLS clients'.
#[derive(Debug)]
pub struct TofuVerifier {
    pin: Option<[u8; 32]>,
    verify_signatures: bool,
    algorithms: WebPkiSupportedAlgorithms,
    /// The first certificate's DER and SHA-256 (hex).
    first_seen: OnceLock<(Vec<u8>, String)>,
}

impl TofuVerifier {
    pub fn new(pin: Option<[u8; 32]>, verify_signatures: bool) -> Self {
        Self {
            pin,
            verify_signatures,
            algorithms: rustls::crypto::ring::default_provider().signature_verification_algorithms,
            first_seen: OnceLock::new(),
        }
    }

    /// The first certificate a server presented, DER.
    pub fn first_seen_der(&self) -> Option<&[u8]> {
        self.first_seen.get().map(|(der, _)| der.as_slice())
    }

    /// Its SHA-256, hex.
    pub fn first_seen_sha256(&self) -> Option<&str> {
        self.first_seen.get().map(|(_, hex)| hex.as_str())
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl ServerCertVerifier for TofuVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        // Hash only when it is needed: with a pin on every handshake, else once per run.
        if self.pin.is_some() || self.first_seen.get().is_none() {
            let digest = ring::digest::digest(&ring::digest::SHA256, end_entity.as_ref());
            if self.first_seen.get().is_none() {
                let _ = self.first_seen.set((end_entity.to_vec(), hex(digest.as_ref())));
            }
            if let Some(pin) = &self.pin
                && digest.as_ref() != pin
            {
                return Err(rustls::Error::General(format!(
                    "the server's certificate has SHA-256 {}, not the pinned {}",
                    hex(digest.as_ref()),
                    hex(pin)
                )));
            }
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        if !self.verify_signatures {
            return Ok(HandshakeSignatureValid::assertion());
        }
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        if !self.verify_signatures {
            return Ok(HandshakeSignatureValid::assertion());
        }
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_names_accept_dns_names_and_ips() {
        assert!(matches!(server_name("localhost", None), Ok(ServerName::DnsName(_))));
        assert!(matches!(server_name("127.0.0.1", None), Ok(ServerName::IpAddress(_))));
        assert!(matches!(server_name("127.0.0.1", Some("example.org")), Ok(ServerName::DnsName(_))));
        assert!(server_name("bad name", None).is_err());
    }

    #[test]
    fn aes_128_gcm_is_offered_first() {
        let tls = ClientTls::new(&TlsSettings::default()).unwrap();
        let suites: Vec<_> = tls.config.crypto_provider().cipher_suites.iter().map(|s| s.suite()).collect();
        assert_eq!(suites[0], rustls::CipherSuite::TLS13_AES_128_GCM_SHA256);
        let first12 = suites.iter().find(|s| format!("{s:?}").starts_with("TLS_ECDHE")).unwrap();
        assert!(is_aes_128_gcm(*first12), "{suites:?}");
        assert!(suites.len() >= 9, "a suite was lost: {suites:?}");
    }

    #[test]
    fn configs_build_for_each_setting() {
        for version in [None, Some(TlsVersion::Tls12), Some(TlsVersion::Tls13)] {
            let tls = ClientTls::new(&TlsSettings { version, ..Default::default() }).unwrap();
            assert!(tls.first_certificate_sha256().is_none());
        }
        let missing = TlsSettings {
            client_cert: Some(super::super::plan::ClientCert {
                cert: "/nonexistent/c.pem".into(),
                key: "/nonexistent/k.pem".into(),
            }),
            ..Default::default()
        };
        let err = ClientTls::new(&missing).err().unwrap();
        assert!(err.downcast_ref::<BadInput>().is_some());
        assert!(format!("{err:#}").contains("/nonexistent/c.pem"));
    }
}
