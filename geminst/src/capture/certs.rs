//! The certificate chain a server sends, as far as the calculator needs it: the DER size of each
//! certificate, and the size of the signatures the leaf's key makes (CertificateVerify in TLS 1.3,
//! ServerKeyExchange in TLS 1.2). Read from PEM with a minimal DER walk to the leaf's
//! SubjectPublicKeyInfo (RFC 5280 §4.1).

use rustls_pki_types::{CertificateDer, pem::PemObject};
use serde::Serialize;

/// The DER size of the default certificate: a self-signed ECDSA P-256 certificate as Gemini
/// servers usually have, made by `openssl req -x509 -newkey ec -pkeyopt
/// ec_paramgen_curve:prime256v1 -subj /CN=example.org -addext subjectAltName=DNS:example.org`
/// (412 bytes with OpenSSL 3.0: subject and issuer names, SKI, AKI, basic constraints, SAN).
pub const TYPICAL_CERT_DER_BYTES: u32 = 412;

/// Mean DER size of an ECDSA P-256 signature: SEQUENCE of two INTEGERs of 32 bytes, each one
/// byte longer when its top bit is set (probability 1/2): 70, 71 or 72 bytes, 71 on average
/// (RFC 8446 §4.2.3 ecdsa_secp256r1_sha256; RFC 3279 §2.2.3 Ecdsa-Sig-Value).
pub const ECDSA_P256_SIGNATURE_BYTES: u32 = 71;

/// OIDs (DER content bytes) of the public-key algorithms whose signature size is known.
const OID_EC_PUBLIC_KEY: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01]; // 1.2.840.10045.2.1
const OID_P256: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07]; // 1.2.840.10045.3.1.7
const OID_P384: &[u8] = &[0x2b, 0x81, 0x04, 0x00, 0x22]; // 1.3.132.0.34
const OID_P521: &[u8] = &[0x2b, 0x81, 0x04, 0x00, 0x23]; // 1.3.132.0.35
const OID_ED25519: &[u8] = &[0x2b, 0x65, 0x70]; // 1.3.101.112
const OID_ED448: &[u8] = &[0x2b, 0x65, 0x71]; // 1.3.101.113
const OID_RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01]; // 1.2.840.113549.1.1.1
const OID_RSA_PSS: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0a]; // 1.2.840.113549.1.1.10

/// DER tags (X.690 §8).
const TAG_INTEGER: u8 = 0x02;
const TAG_BIT_STRING: u8 = 0x03;
const TAG_OID: u8 = 0x06;
const TAG_SEQUENCE: u8 = 0x30;
const TAG_VERSION: u8 = 0xa0; // [0] EXPLICIT Version in TBSCertificate

/// The chain a server sends and the size of its leaf key's signatures.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CertChain {
    /// DER bytes of each certificate, leaf first.
    pub der_bytes: Vec<u32>,
    /// The leaf key's algorithm, e.g. "ECDSA P-256".
    pub key: String,
    /// Bytes of one signature by the leaf key (mean, for ECDSA).
    pub signature_bytes: u32,
}

impl CertChain {
    /// The default: one typical self-signed ECDSA P-256 certificate.
    pub fn typical() -> Self {
        Self {
            der_bytes: vec![TYPICAL_CERT_DER_BYTES],
            key: "ECDSA P-256".into(),
            signature_bytes: ECDSA_P256_SIGNATURE_BYTES,
        }
    }

    /// The chain in the PEM file at `path` (given with `flag`), or the typical one without a
    /// path. A file that cannot be read or is not a chain is bad input naming the flag and file.
    pub fn from_pem_file(path: Option<&std::path::Path>, flag: &str) -> anyhow::Result<Self> {
        let Some(path) = path else { return Ok(Self::typical()) };
        let bad = |e: String| crate::exit::BadInput(format!("{flag} {}: {e}", path.display()));
        let pem = std::fs::read(path).map_err(|e| bad(format!("cannot read it: {e}")))?;
        Ok(Self::from_pem(&pem).map_err(bad)?)
    }

    /// Reads a PEM certificate chain (leaf first). The error says what is wrong with the input.
    pub fn from_pem(pem: &[u8]) -> Result<Self, String> {
        let mut der = Vec::new();
        for item in CertificateDer::pem_slice_iter(pem) {
            der.push(item.map_err(|e| format!("not a PEM certificate chain: {e}"))?);
        }
        let leaf = der.first().ok_or("no PEM CERTIFICATE block found")?;
        let (key, signature_bytes) = leaf_signature(leaf.as_ref())?;
        Ok(Self { der_bytes: der.iter().map(|d| d.len() as u32).collect(), key, signature_bytes })
    }

    pub fn total_der_bytes(&self) -> u64 {
        self.der_bytes.iter().map(|&b| u64::from(b)).sum()
    }
}

/// One DER TLV: (tag, contents, rest).
fn tlv(b: &[u8]) -> Result<(u8, &[u8], &[u8]), String> {
    let bad = || "malformed DER in the certificate".to_string();
    let tag = *b.first().ok_or_else(bad)?;
    let first = *b.get(1).ok_or_else(bad)?;
    let (len, at) = if first < 0x80 {
        (usize::from(first), 2)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 {
            return Err(bad());
        }
        let bytes = b.get(2..2 + n).ok_or_else(bad)?;
        (bytes.iter().fold(0usize, |acc, &x| acc << 8 | usize::from(x)), 2 + n)
    };
    let contents = b.get(at..at + len).ok_or_else(bad)?;
    Ok((tag, contents, &b[at + len..]))
}

fn expect(b: &[u8], tag: u8) -> Result<(&[u8], &[u8]), String> {
    let (t, c, rest) = tlv(b)?;
    if t != tag {
        return Err(format!("unexpected DER tag {t:#04x} in the certificate (wanted {tag:#04x})"));
    }
    Ok((c, rest))
}

/// The leaf's key algorithm and the size of one signature it makes.
fn leaf_signature(cert: &[u8]) -> Result<(String, u32), String> {
    let (certificate, _) = expect(cert, TAG_SEQUENCE)?;
    let (tbs, _) = expect(certificate, TAG_SEQUENCE)?;
    let mut rest = tbs;
    if rest.first() == Some(&TAG_VERSION) {
        rest = tlv(rest)?.2;
    }
    // serialNumber, signature, issuer, validity, subject, then subjectPublicKeyInfo.
    rest = expect(rest, TAG_INTEGER)?.1;
    for _ in 0..4 {
        rest = expect(rest, TAG_SEQUENCE)?.1;
    }
    let (spki, _) = expect(rest, TAG_SEQUENCE)?;
    let (alg, spki_rest) = expect(spki, TAG_SEQUENCE)?;
    let (oid, params) = expect(alg, TAG_OID)?;
    let (key_bits, _) = expect(spki_rest, TAG_BIT_STRING)?;
    // ECDSA: two INTEGERs of the field size, DER framing 6 bytes, plus one byte on average for
    // the top bits (RFC 3279 §2.2.3). Ed25519/Ed448: fixed (RFC 8032). RSA: the modulus size.
    match oid {
        OID_EC_PUBLIC_KEY => {
            let curve = expect(params, TAG_OID).map(|(c, _)| c).unwrap_or(&[]);
            match curve {
                OID_P256 => Ok(("ECDSA P-256".into(), ECDSA_P256_SIGNATURE_BYTES)),
                OID_P384 => Ok(("ECDSA P-384".into(), 6 + 2 * 48 + 1)),
                // 66-byte integers need a two-byte SEQUENCE length: 139 on average.
                OID_P521 => Ok(("ECDSA P-521".into(), 7 + 2 * 66)),
                _ => Err("the certificate's elliptic curve is not P-256, P-384 or P-521".into()),
            }
        }
        OID_ED25519 => Ok(("Ed25519".into(), 64)),
        OID_ED448 => Ok(("Ed448".into(), 114)),
        OID_RSA | OID_RSA_PSS => {
            // BIT STRING: one byte of unused bits, then RSAPublicKey ::= SEQUENCE { n, e }.
            let (rsa, _) = expect(key_bits.get(1..).unwrap_or(&[]), TAG_SEQUENCE)?;
            let (n, _) = expect(rsa, TAG_INTEGER)?;
            let bytes = n.iter().skip_while(|&&b| b == 0).count() as u32;
            Ok((format!("RSA {}", bytes * 8), bytes))
        }
        _ => Err("the certificate's key is not ECDSA, EdDSA or RSA".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_an_rcgen_ecdsa_certificate() {
        let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
        let chain = CertChain::from_pem(ck.cert.pem().as_bytes()).unwrap();
        assert_eq!(chain.der_bytes, vec![ck.cert.der().len() as u32]);
        assert_eq!((chain.key.as_str(), chain.signature_bytes), ("ECDSA P-256", 71));
    }

    #[test]
    fn reads_a_two_certificate_chain_and_an_ed25519_key() {
        let ca_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
        let mut ca_params = rcgen::CertificateParams::new(vec![]).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let leaf_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
        let issuer = rcgen::Issuer::new(ca_params, &ca_key);
        let leaf = rcgen::CertificateParams::new(vec!["a.example".into()])
            .unwrap()
            .signed_by(&leaf_key, &issuer)
            .unwrap();
        let pem = format!("{}{}", leaf.pem(), ca.pem());
        let chain = CertChain::from_pem(pem.as_bytes()).unwrap();
        assert_eq!(chain.der_bytes, vec![leaf.der().len() as u32, ca.der().len() as u32]);
        assert_eq!((chain.key.as_str(), chain.signature_bytes), ("Ed25519", 64));
    }

    #[test]
    fn not_pem_is_an_error_that_says_so() {
        let e = CertChain::from_pem(b"hello").unwrap_err();
        assert!(e.contains("no PEM CERTIFICATE"), "{e}");
        let e = CertChain::from_pem(b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
            .unwrap_err();
        assert!(e.contains("DER"), "{e}");
    }
}
