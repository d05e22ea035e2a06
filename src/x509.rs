//! X.509 for credential keys, without I/O: a PKCS#10 request signed by a key
//! that lives elsewhere (the HSM), its subject read from RFC 4514 text, and
//! the chain a CA returns, parsed and matched to the key.

use std::cell::RefCell;

use rcgen::{
    CertificateParams, DistinguishedName, DnType, DnValue, KeyUsagePurpose, PublicKeyData,
    SignatureAlgorithm, SigningKey,
};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject as _;
use sha2::{Digest, Sha256};

use crate::jose::{Algorithm, PublicKey};

/// What is wrong with a subject, a request or a chain; the message names it.
#[derive(Debug, thiserror::Error)]
pub enum X509Error {
    /// The subject text cannot be used.
    #[error("subject: {0}")]
    Subject(String),
    /// The chain cannot be used.
    #[error("{0}")]
    Chain(String),
    /// The request could not be made (the key did not sign, or the encoder
    /// refused).
    #[error("making the certificate request: {0}")]
    Request(String),
}

/// The attributes a subject may name, by their RFC 4514 short names (case
/// does not matter).
const SUBJECT_ATTRIBUTES: [&str; 8] = [
    "CN",
    "O",
    "OU",
    "C",
    "L",
    "ST",
    "serialNumber",
    "organizationIdentifier",
];

/// What rcgen calls an attribute (upper case), and whether its value is a
/// `PrintableString` (X.520 says so for these) rather than UTF-8.
fn subject_attribute(name: &str) -> Option<(DnType, bool)> {
    Some(match name {
        "CN" => (DnType::CommonName, false),
        "O" => (DnType::OrganizationName, false),
        "OU" => (DnType::OrganizationalUnitName, false),
        "C" => (DnType::CountryName, true),
        "L" => (DnType::LocalityName, false),
        "ST" => (DnType::StateOrProvinceName, false),
        // X.520 serialNumber (2.5.4.5), e.g. a registry number.
        "SERIALNUMBER" => (DnType::CustomDnType(vec![2, 5, 4, 5]), true),
        // X.520 organizationIdentifier (2.5.4.97), e.g. an eIDAS `VATNL-...`.
        "ORGANIZATIONIDENTIFIER" => (DnType::CustomDnType(vec![2, 5, 4, 97]), false),
        _ => return None,
    })
}

/// Parses a subject written as in RFC 4514 (`CN=Example Issuer,O=Example
/// University,C=NL`: the most specific attribute first; `\` escapes a `,`,
/// `+`, `=` or `\` in a value). Each attribute may appear once; multi-valued
/// RDNs (`+`) are not supported.
pub fn parse_subject(text: &str) -> Result<DistinguishedName, X509Error> {
    let mut parts: Vec<(String, String)> = Vec::new();
    let mut current = String::new();
    let mut key: Option<String> = None;
    let mut chars = text.chars();
    let mut finish = |key: Option<String>, value: &mut String| -> Result<(), X509Error> {
        let key = key.ok_or_else(|| {
            X509Error::Subject(format!("{:?} is not ATTRIBUTE=value", value.trim()))
        })?;
        parts.push((key.trim().to_ascii_uppercase(), value.trim().to_owned()));
        value.clear();
        Ok(())
    };
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some(escaped) => current.push(escaped),
                None => return Err(X509Error::Subject("it ends with a lone '\\'".to_owned())),
            },
            '=' if key.is_none() => key = Some(std::mem::take(&mut current)),
            ',' => finish(key.take(), &mut current)?,
            '+' => {
                return Err(X509Error::Subject(
                    "multi-valued attributes ('+') are not supported; escape a literal '+' as '\\+'"
                        .to_owned(),
                ));
            }
            c => current.push(c),
        }
    }
    finish(key.take(), &mut current)?;

    let mut name = DistinguishedName::new();
    let mut seen: Vec<String> = Vec::new();
    // RFC 4514 writes the last RDN first; the DER sequence starts with the
    // least specific (C=..., O=..., CN=...).
    for (key, value) in parts.into_iter().rev() {
        let Some((dn_type, printable)) = subject_attribute(&key) else {
            return Err(X509Error::Subject(format!(
                "unknown attribute {key:?} (use {})",
                SUBJECT_ATTRIBUTES.join(", ")
            )));
        };
        if value.is_empty() {
            return Err(X509Error::Subject(format!("{key} is empty")));
        }
        if seen.contains(&key) {
            return Err(X509Error::Subject(format!("{key} is given twice")));
        }
        if key == "C" && !(value.len() == 2 && value.chars().all(|c| c.is_ascii_uppercase())) {
            return Err(X509Error::Subject(format!(
                "C must be a two-letter country code such as NL, not {value:?}"
            )));
        }
        let value = if printable {
            DnValue::PrintableString(value.as_str().try_into().map_err(|_| {
                X509Error::Subject(format!(
                    "{key} may hold only letters, digits, spaces and '()+,-./:=?"
                ))
            })?)
        } else {
            DnValue::Utf8String(value)
        };
        name.push(dn_type, value);
        seen.push(key);
    }
    if seen.is_empty() {
        return Err(X509Error::Subject("it names no attribute".to_owned()));
    }
    Ok(name)
}

/// rcgen's algorithm for a notary key: the signature algorithm of the
/// request, and (through it) the key's SubjectPublicKeyInfo algorithm.
fn rcgen_algorithm(alg: Algorithm) -> &'static SignatureAlgorithm {
    match alg {
        Algorithm::EdDSA => &rcgen::PKCS_ED25519,
        Algorithm::ES256 => &rcgen::PKCS_ECDSA_P256_SHA256,
    }
}

/// A public key as rcgen encodes it.
struct Public {
    /// Raw key: the 32 bytes of Ed25519, or `0x04 || x || y` of P-256.
    raw: Vec<u8>,
    algorithm: &'static SignatureAlgorithm,
}

impl Public {
    fn of(key: &PublicKey) -> Self {
        Public {
            raw: key.raw_bytes(),
            algorithm: rcgen_algorithm(key.algorithm()),
        }
    }
}

impl PublicKeyData for Public {
    fn der_bytes(&self) -> &[u8] {
        &self.raw
    }

    fn algorithm(&self) -> &'static SignatureAlgorithm {
        self.algorithm
    }
}

/// The DER SubjectPublicKeyInfo of a notary key, as a certificate for it
/// must carry.
pub fn subject_public_key_info(key: &PublicKey) -> Vec<u8> {
    Public::of(key).subject_public_key_info()
}

/// The P-256 key in a DER SubjectPublicKeyInfo, if that is what it is
/// (exactly as [`subject_public_key_info`] encodes it).
pub fn p256_from_subject_public_key_info(der: &[u8]) -> Option<PublicKey> {
    let point = der.get(der.len().checked_sub(65)?..)?;
    let key = PublicKey::from_ec_point(Algorithm::ES256, point)?;
    (subject_public_key_info(&key) == der).then_some(key)
}

/// A key whose private half signs elsewhere (in the HSM), as rcgen's
/// [`SigningKey`]. `sign` returns what notary's signer returns (JWS form:
/// Ed25519 signature, or ECDSA `r || s`); X.509 wants ECDSA signatures as a
/// DER `Ecdsa-Sig-Value`, so those are re-encoded here.
struct RemoteKey<F> {
    public: Public,
    alg: Algorithm,
    sign: F,
    /// Why the signer failed, kept because rcgen's error has no room for it.
    failure: RefCell<Option<String>>,
}

impl<F> PublicKeyData for RemoteKey<F> {
    fn der_bytes(&self) -> &[u8] {
        self.public.der_bytes()
    }

    fn algorithm(&self) -> &'static SignatureAlgorithm {
        self.public.algorithm
    }
}

impl<F, E> SigningKey for RemoteKey<F>
where
    F: Fn(&[u8]) -> Result<Vec<u8>, E>,
    E: std::fmt::Display,
{
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        let fail = |why: String| {
            *self.failure.borrow_mut() = Some(why);
            rcgen::Error::RemoteKeyError
        };
        let raw = (self.sign)(msg).map_err(|e| fail(e.to_string()))?;
        match self.alg {
            Algorithm::EdDSA if raw.len() == 64 => Ok(raw),
            Algorithm::EdDSA => Err(fail(format!(
                "the key returned a {}-byte Ed25519 signature",
                raw.len()
            ))),
            Algorithm::ES256 => ecdsa_signature_der(&raw).ok_or_else(|| {
                fail(format!(
                    "the key returned a {}-byte P-256 signature, not r || s",
                    raw.len()
                ))
            }),
        }
    }
}

/// Re-encodes a P-256 signature from `r || s` (32 bytes each, as PKCS#11
/// and JWS have it) as the DER `SEQUENCE { r INTEGER, s INTEGER }` that
/// X.509 and PKCS#10 carry.
pub fn ecdsa_signature_der(raw: &[u8]) -> Option<Vec<u8>> {
    if raw.len() != 64 {
        return None;
    }
    let (r, s) = raw.split_at(32);
    let mut body = Vec::with_capacity(70);
    for integer in [r, s] {
        // Minimal two's complement: no leading zero bytes, then one 0x00
        // if the high bit is set (the value is positive).
        let first = integer
            .iter()
            .position(|b| *b != 0)
            .unwrap_or(integer.len() - 1);
        let digits = &integer[first..];
        let pad = digits[0] & 0x80 != 0;
        body.push(0x02);
        body.push(u8::try_from(digits.len() + usize::from(pad)).ok()?);
        if pad {
            body.push(0x00);
        }
        body.extend_from_slice(digits);
    }
    // At most 2 * (2 + 33) = 70 bytes: the short form of the length.
    let mut der = vec![0x30, u8::try_from(body.len()).ok()?];
    der.extend(body);
    Some(der)
}

/// A PKCS#10 certification request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificationRequest {
    /// DER.
    pub der: Vec<u8>,
    /// PEM (`CERTIFICATE REQUEST`).
    pub pem: String,
}

/// A PKCS#10 certification request for `key` with `subject`, asking
/// for the digitalSignature key usage, self-signed by `sign` over the
/// request's DER (`sign` signs as notary's signer does: Ed25519, or ES256
/// with SHA-256 and the signature as `r || s`).
pub fn certification_request<F, E>(
    key: &PublicKey,
    subject: DistinguishedName,
    sign: F,
) -> Result<CertificationRequest, X509Error>
where
    F: Fn(&[u8]) -> Result<Vec<u8>, E>,
    E: std::fmt::Display,
{
    let mut params = CertificateParams::default();
    params.distinguished_name = subject;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    let remote = RemoteKey {
        public: Public::of(key),
        alg: key.algorithm(),
        sign,
        failure: RefCell::new(None),
    };
    let request = params.serialize_request(&remote).map_err(|e| {
        X509Error::Request(remote.failure.borrow_mut().take().unwrap_or(e.to_string()))
    })?;
    Ok(CertificationRequest {
        der: request.der().to_vec(),
        pem: request
            .pem()
            .map_err(|e| X509Error::Request(e.to_string()))?,
    })
}

/// The facts of a chain's leaf certificate that notary records and shows.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CertificateFacts {
    /// Subject, as `C=NL, O=..., CN=...`.
    pub subject: String,
    /// Issuer, in the same form.
    pub issuer: String,
    /// Start of validity, unix seconds.
    pub not_before: i64,
    /// End of validity, unix seconds.
    pub not_after: i64,
    /// SHA-256 of the DER certificate, hex.
    pub sha256: String,
}

fn parse(
    der: &[u8],
    position: usize,
) -> Result<x509_parser::certificate::X509Certificate<'_>, X509Error> {
    use x509_parser::prelude::FromDer as _;
    match x509_parser::certificate::X509Certificate::from_der(der) {
        Ok(([], cert)) => Ok(cert),
        Ok(_) => Err(X509Error::Chain(format!(
            "certificate {position} of the chain has bytes after its end"
        ))),
        Err(e) => Err(X509Error::Chain(format!(
            "certificate {position} of the chain does not parse: {e}"
        ))),
    }
}

fn facts(der: &[u8], cert: &x509_parser::certificate::X509Certificate<'_>) -> CertificateFacts {
    CertificateFacts {
        subject: cert.subject().to_string(),
        issuer: cert.issuer().to_string(),
        not_before: cert.validity().not_before.timestamp(),
        not_after: cert.validity().not_after.timestamp(),
        sha256: Sha256::digest(der)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect(),
    }
}

/// The DER certificates of a PEM file, in file order (other sections, such
/// as a key a CA bundled, are skipped).
pub fn certificates_from_pem(pem: &[u8]) -> Result<Vec<Vec<u8>>, X509Error> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .map(|c| c.map(|c| c.as_ref().to_vec()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| X509Error::Chain(format!("the PEM file does not parse: {e}")))?;
    if certs.is_empty() {
        return Err(X509Error::Chain(
            "the file holds no PEM certificate (-----BEGIN CERTIFICATE-----)".to_owned(),
        ));
    }
    Ok(certs)
}

/// Checks a chain (DER, leaf first) for `key`: every certificate parses,
/// each is issued by the next (by name: the chain is in order), the leaf
/// certifies exactly this public key and has not expired at `now`.
/// Returns the leaf's facts.
pub fn check_chain(
    chain: &[Vec<u8>],
    key: &PublicKey,
    now: i64,
) -> Result<CertificateFacts, X509Error> {
    let parsed = chain
        .iter()
        .enumerate()
        .map(|(i, der)| parse(der, i + 1))
        .collect::<Result<Vec<_>, _>>()?;
    let (Some(leaf), Some(leaf_der)) = (parsed.first(), chain.first()) else {
        return Err(X509Error::Chain("the chain is empty".to_owned()));
    };
    if leaf.public_key().raw != subject_public_key_info(key).as_slice() {
        return Err(X509Error::Chain(format!(
            "the certificate is for another public key, not the key {} (was it issued for this key's CSR?)",
            key.thumbprint()
        )));
    }
    for (i, pair) in parsed.windows(2).enumerate() {
        if let [cert, issuer] = pair {
            if cert.issuer().as_raw() != issuer.subject().as_raw() {
                return Err(X509Error::Chain(format!(
                    "certificate {} was not issued by certificate {} ({}): put the leaf first, then each issuer",
                    i + 1,
                    i + 2,
                    issuer.subject()
                )));
            }
        }
    }
    let leaf_facts = facts(leaf_der, leaf);
    if leaf_facts.not_after < now {
        return Err(X509Error::Chain(format!(
            "the certificate expired at {}",
            leaf.validity().not_after
        )));
    }
    Ok(leaf_facts)
}

/// The facts of the leaf of a stored chain (`x5c`: base64 DER, leaf first),
/// or `None` if it does not decode.
pub fn leaf_facts(x5c: &[String]) -> Option<CertificateFacts> {
    use base64::Engine as _;
    let der = base64::engine::general_purpose::STANDARD
        .decode(x5c.first()?)
        .ok()?;
    let cert = parse(&der, 1).ok()?;
    Some(facts(&der, &cert))
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_lc_rs::signature::{self, KeyPair as _};

    #[test]
    fn subjects_are_read_as_rfc_4514_and_written_least_specific_first() {
        let name =
            parse_subject("CN=Example Issuer, O=Example University\\, Faculty,C=NL").unwrap();
        let order: Vec<DnType> = name.iter().map(|(t, _)| t.clone()).collect();
        assert_eq!(
            order,
            [
                DnType::CountryName,
                DnType::OrganizationName,
                DnType::CommonName
            ]
        );
        assert_eq!(
            name.get(&DnType::OrganizationName),
            Some(&DnValue::Utf8String(
                "Example University, Faculty".to_owned()
            ))
        );
        for (bad, why) in [
            ("", "not ATTRIBUTE=value"),
            ("CN=a,CN=b", "twice"),
            ("CN=a,X=b", "unknown attribute \"X\""),
            ("CN=a,C=Netherlands", "two-letter"),
            ("CN=a+O=b", "multi-valued"),
            ("CN=", "CN is empty"),
            ("CN=a\\", "lone"),
            ("serialNumber=a@b", "only letters"),
        ] {
            let err = parse_subject(bad).unwrap_err().to_string();
            assert!(err.contains(why), "{bad:?}: {err}");
        }
    }

    #[test]
    fn ecdsa_signatures_are_minimal_der_integers() {
        let mut raw = [0u8; 64];
        raw[31] = 1; // r = 1
        raw[32] = 0x80; // s has its high bit set: padded with 0x00
        let der = ecdsa_signature_der(&raw).unwrap();
        assert_eq!(&der[..5], &[0x30, 3 + 35, 0x02, 0x01, 0x01]);
        assert_eq!(&der[5..8], &[0x02, 33, 0x00]);
        assert_eq!(der.len(), 2 + 3 + 35);
        assert!(ecdsa_signature_der(&raw[..63]).is_none());
    }

    /// Parses a request with x509-parser (not rcgen) and checks its
    /// self-signature with aws-lc-rs (not the code that made it).
    fn verify_request(
        pem: &str,
        algorithm: &'static dyn signature::VerificationAlgorithm,
    ) -> (Vec<u8>, String) {
        use x509_parser::prelude::FromDer as _;
        let der = x509_parser::pem::parse_x509_pem(pem.as_bytes())
            .unwrap()
            .1
            .contents;
        let (rest, request) =
            x509_parser::certification_request::X509CertificationRequest::from_der(&der).unwrap();
        assert!(rest.is_empty());
        let info = &request.certification_request_info;
        let spki = &info.subject_pki;
        signature::UnparsedPublicKey::new(algorithm, &spki.subject_public_key.data)
            .verify(info.raw, &request.signature_value.data)
            .unwrap();
        (spki.raw.to_vec(), info.subject.to_string())
    }

    #[test]
    fn a_p256_request_signed_as_r_s_verifies() {
        let rng = aws_lc_rs::rand::SystemRandom::new();
        let pkcs8 = signature::EcdsaKeyPair::generate_pkcs8(
            &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            &rng,
        )
        .unwrap();
        // FIXED signing returns r || s, as CKM_ECDSA does.
        let pair = signature::EcdsaKeyPair::from_pkcs8(
            &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            pkcs8.as_ref(),
        )
        .unwrap();
        let point = pair.public_key().as_ref();
        let key = PublicKey::P256 {
            x: point[1..33].try_into().unwrap(),
            y: point[33..].try_into().unwrap(),
        };
        let subject = parse_subject("CN=Example Issuer,O=Example University,C=NL").unwrap();
        let pem = certification_request(&key, subject, |msg: &[u8]| {
            pair.sign(&rng, msg)
                .map(|s| s.as_ref().to_vec())
                .map_err(|_| "failed")
        })
        .unwrap()
        .pem;
        assert!(pem.starts_with("-----BEGIN CERTIFICATE REQUEST-----"));
        let (spki, subject) = verify_request(&pem, &signature::ECDSA_P256_SHA256_ASN1);
        assert_eq!(spki, subject_public_key_info(&key));
        assert_eq!(subject, "C=NL, O=Example University, CN=Example Issuer");
    }

    #[test]
    fn an_ed25519_request_verifies() {
        let pair = signature::Ed25519KeyPair::generate().unwrap();
        let key = PublicKey::Ed25519(pair.public_key().as_ref().try_into().unwrap());
        let pem = certification_request(&key, parse_subject("CN=x").unwrap(), |msg: &[u8]| {
            Ok::<_, String>(pair.sign(msg).as_ref().to_vec())
        })
        .unwrap()
        .pem;
        let (spki, _) = verify_request(&pem, &signature::ED25519);
        assert_eq!(spki, subject_public_key_info(&key));
    }

    #[test]
    fn a_signer_that_fails_is_named_in_the_error() {
        let key = PublicKey::Ed25519([7; 32]);
        let err = certification_request(&key, parse_subject("CN=x").unwrap(), |_: &[u8]| {
            Err::<Vec<u8>, _>("the token is away")
        })
        .unwrap_err();
        assert!(err.to_string().contains("the token is away"), "{err}");
    }

    /// A root, an intermediate and a leaf for `key`, DER, leaf first; the
    /// leaf valid until `not_after`.
    fn chain_for(key: &PublicKey, not_after: time::OffsetDateTime) -> Vec<Vec<u8>> {
        let named = |cn: &str, ca: bool| {
            let mut params = CertificateParams::default();
            params.distinguished_name = parse_subject(&format!("CN={cn},O=Test CA,C=NL")).unwrap();
            if ca {
                params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
            }
            params
        };
        let root_key = rcgen::KeyPair::generate().unwrap();
        let root = named("Root", true).self_signed(&root_key).unwrap();
        let root_issuer = rcgen::Issuer::new(named("Root", true), &root_key);
        let inter_key = rcgen::KeyPair::generate().unwrap();
        let inter = named("Intermediate", true)
            .signed_by(&inter_key, &root_issuer)
            .unwrap();
        let inter_issuer = rcgen::Issuer::new(named("Intermediate", true), &inter_key);
        let mut leaf_params = named("Example Issuer", false);
        leaf_params.not_after = not_after;
        let leaf = leaf_params
            .signed_by(&Public::of(key), &inter_issuer)
            .unwrap();
        [leaf.der(), inter.der(), root.der()]
            .iter()
            .map(|d| d.to_vec())
            .collect()
    }

    #[test]
    fn a_chain_is_accepted_only_for_its_key_in_order_and_unexpired() {
        let key = PublicKey::P256 {
            x: [1; 32],
            y: [2; 32],
        };
        let now = 1_900_000_000;
        let later = time::OffsetDateTime::from_unix_timestamp(now + 86_400).unwrap();
        let chain = chain_for(&key, later);
        let leaf = check_chain(&chain, &key, now).unwrap();
        assert_eq!(leaf.subject, "C=NL, O=Test CA, CN=Example Issuer");
        assert_eq!(leaf.issuer, "C=NL, O=Test CA, CN=Intermediate");
        assert_eq!(leaf.not_after, now + 86_400);
        assert_eq!(leaf.sha256.len(), 64);
        assert!(
            check_chain(&chain[..1], &key, now).is_ok(),
            "the leaf alone"
        );

        let other = PublicKey::Ed25519([3; 32]);
        let err = check_chain(&chain, &other, now).unwrap_err().to_string();
        assert!(err.contains("another public key"), "{err}");
        let swapped = vec![chain[0].clone(), chain[2].clone(), chain[1].clone()];
        let err = check_chain(&swapped, &key, now).unwrap_err().to_string();
        assert!(
            err.contains("certificate 1 was not issued by certificate 2"),
            "{err}"
        );
        let err = check_chain(&chain, &key, now + 86_401)
            .unwrap_err()
            .to_string();
        assert!(err.contains("expired"), "{err}");
        let err = check_chain(&[b"junk".to_vec()], &key, now)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("certificate 1 of the chain does not parse"),
            "{err}"
        );

        let pem: String = chain
            .iter()
            .map(|der| {
                format!(
                    "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
                    base64::Engine::encode(&base64::engine::general_purpose::STANDARD, der)
                )
            })
            .collect();
        assert_eq!(certificates_from_pem(pem.as_bytes()).unwrap(), chain);
        let err = certificates_from_pem(
            b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("no PEM certificate"), "{err}");
        let x5c: Vec<String> = chain
            .iter()
            .map(|der| base64::Engine::encode(&base64::engine::general_purpose::STANDARD, der))
            .collect();
        assert_eq!(leaf_facts(&x5c), Some(leaf));
    }
}
