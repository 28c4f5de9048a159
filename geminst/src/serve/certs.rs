//! The server's certificate: supplied (`--cert`/`--key`, PEM) or self-signed and kept in the
//! state directory. Gemini clients pin certificates on first use (TOFU), so a generated one is
//! kept across restarts and replaced only when the hostnames change or it nears expiry.
//! ECDSA P-256: the fastest signature ring offers for the handshake's CertificateVerify.

use std::{
    fs,
    io::Write,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
};

use anyhow::{Context, Result};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
use serde::{Deserialize, Serialize};

use crate::{clock, dataset::files::write_atomic, dataset::files::write_atomic_with, exit::BadInput};

/// A generated certificate is valid from an hour before it is made (clock skew)...
const BACKDATE_SECS: i64 = 3600;
/// ...for five years,
const VALID_SECS: i64 = 5 * 365 * 86_400;
/// and replaced when less than a week remains.
const RENEW_BEFORE_SECS: i64 = 7 * 86_400;

pub const CERT_FILE: &str = "cert.pem";
pub const KEY_FILE: &str = "key.pem";
/// What a generated certificate was made for, so a change of hostnames is noticed.
const INFO_FILE: &str = "cert.json";

/// A certificate chain and its key, ready for rustls.
pub struct CertKey {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
    /// SHA-256 of the leaf certificate (DER), lower-case hex.
    pub fingerprint: String,
    pub cert_path: PathBuf,
}

#[derive(Serialize, Deserialize, PartialEq, Debug)]
struct Info {
    hostnames: Vec<String>,
    not_after_unix: i64,
    algorithm: String,
}

/// SHA-256 of a DER certificate, lower-case hex.
pub fn fingerprint(der: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, der);
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// Loads a supplied certificate chain and key (PEM). Errors name the file and are bad input.
pub fn load(cert: &Path, key: &Path) -> Result<CertKey> {
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| BadInput(format!("--cert {}: {e}", cert.display())))?;
    if chain.is_empty() {
        return Err(BadInput(format!("--cert {}: no PEM certificate in it", cert.display())).into());
    }
    let key =
        PrivateKeyDer::from_pem_file(key).map_err(|e| BadInput(format!("--key {}: {e}", key.display())))?;
    let fingerprint = fingerprint(&chain[0]);
    Ok(CertKey { chain, key, fingerprint, cert_path: cert.to_owned() })
}

/// The certificate kept in `state_dir` for `hostnames`, generated if missing, made for other
/// hostnames, or near expiry.
pub fn load_or_generate(state_dir: &Path, hostnames: &[String]) -> Result<CertKey> {
    let cert_path = state_dir.join(CERT_FILE);
    let key_path = state_dir.join(KEY_FILE);
    let info_path = state_dir.join(INFO_FILE);
    let now = (clock::unix_ns() / 1_000_000_000) as i64;
    let current = fs::read(&info_path).ok().and_then(|b| serde_json::from_slice::<Info>(&b).ok());
    let fresh =
        current.is_some_and(|i| i.hostnames == hostnames && i.not_after_unix - RENEW_BEFORE_SECS > now);
    if fresh && cert_path.is_file() && key_path.is_file() {
        return load(&cert_path, &key_path);
    }
    generate(hostnames, now, &cert_path, &key_path, &info_path)?;
    load(&cert_path, &key_path)
}

fn generate(
    hostnames: &[String],
    now: i64,
    cert_path: &Path,
    key_path: &Path,
    info_path: &Path,
) -> Result<()> {
    let key =
        rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).context("generating a P-256 key")?;
    // IP addresses become IP SANs, names DNS SANs (rcgen decides by parsing).
    let mut params = rcgen::CertificateParams::new(hostnames.to_vec())
        .map_err(|e| BadInput(format!("--hostname {hostnames:?}: {e}")))?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(rcgen::DnType::CommonName, hostnames[0].clone());
    let not_after = now + VALID_SECS;
    params.not_before = time::OffsetDateTime::from_unix_timestamp(now - BACKDATE_SECS)?;
    params.not_after = time::OffsetDateTime::from_unix_timestamp(not_after)?;
    let cert = params.self_signed(&key).context("signing the certificate")?;
    // The key first and private (0600), so a crash never leaves a certificate without its key.
    write_atomic_with(key_path, |f| {
        f.set_permissions(fs::Permissions::from_mode(0o600))?;
        f.write_all(key.serialize_pem().as_bytes())?;
        Ok(())
    })?;
    write_atomic(cert_path, cert.pem().as_bytes())?;
    let info =
        Info { hostnames: hostnames.to_vec(), not_after_unix: not_after, algorithm: "ECDSA P-256".into() };
    write_atomic(info_path, &serde_json::to_vec_pretty(&info)?)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_certificates_are_kept_until_the_names_change() {
        let dir = std::env::temp_dir().join(format!("geminst-certs-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
        let a = load_or_generate(&dir, &names).unwrap();
        let b = load_or_generate(&dir, &names).unwrap();
        assert_eq!(a.fingerprint, b.fingerprint);
        assert_eq!(a.fingerprint.len(), 64);
        let mode = fs::metadata(dir.join(KEY_FILE)).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let c = load_or_generate(&dir, &["example.org".to_string()]).unwrap();
        assert_ne!(a.fingerprint, c.fingerprint);
        fs::remove_dir_all(&dir).unwrap();
    }
}
