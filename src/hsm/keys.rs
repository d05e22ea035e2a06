//! Key templates and key discovery on the token.
//!
//! Templates are explicit about every custody attribute instead of relying on
//! the module's defaults, which differ between vendors (some make keys
//! extractable unless told otherwise).

use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::Session;

use super::{HsmError, KeyRole};
use crate::jose::{Algorithm, PublicKey};

/// DER OID 1.3.101.112 (id-Ed25519), the `CKA_EC_PARAMS` of an Ed25519 key.
const ED25519_PARAMS: &[u8] = &[0x06, 0x03, 0x2b, 0x65, 0x70];
/// DER OID 1.2.840.10045.3.1.7 (prime256v1 / P-256).
const P256_PARAMS: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];

/// Attributes shared by every secret object notary creates: on the token,
/// private, sensitive, never extractable, not modifiable or copyable.
fn custody_template(label: &str, id: &[u8]) -> Vec<Attribute> {
    vec![
        Attribute::Token(true),
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
        Attribute::Modifiable(false),
        Attribute::Copyable(false),
        Attribute::Derive(false),
        Attribute::Decrypt(false),
        Attribute::Unwrap(false),
        Attribute::Label(label.as_bytes().to_vec()),
        Attribute::Id(id.to_vec()),
    ]
}

/// Generates a sign-only key pair for `alg` inside the token.
pub fn generate_signing_key(
    session: &Session,
    alg: Algorithm,
    label: &str,
    id: &[u8],
) -> Result<(), HsmError> {
    let (mechanism, params) = match alg {
        Algorithm::EdDSA => (Mechanism::EccEdwardsKeyPairGen, ED25519_PARAMS),
        Algorithm::ES256 => (Mechanism::EccKeyPairGen, P256_PARAMS),
    };
    let public = vec![
        Attribute::Token(true),
        Attribute::Private(false),
        Attribute::Verify(true),
        Attribute::Encrypt(false),
        Attribute::Wrap(false),
        Attribute::EcParams(params.to_vec()),
        Attribute::Label(label.as_bytes().to_vec()),
        Attribute::Id(id.to_vec()),
    ];
    let mut private = custody_template(label, id);
    private.push(Attribute::Sign(true));
    session
        .generate_key_pair(&mechanism, &public, &private)
        .map_err(|e| HsmError::from_pkcs11("generating the signing key", e))?;
    Ok(())
}

/// Generates the 256-bit HMAC key used for keyed hashing inside the token.
pub fn generate_hashing_key(session: &Session, label: &str, id: &[u8]) -> Result<(), HsmError> {
    let mut template = custody_template(label, id);
    template.extend([
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(KeyType::GENERIC_SECRET),
        Attribute::ValueLen(32.into()),
        Attribute::Sign(true),
        Attribute::Verify(true),
        Attribute::Encrypt(false),
        Attribute::Wrap(false),
    ]);
    session
        .generate_key(&Mechanism::GenericSecretKeyGen, &template)
        .map_err(|e| HsmError::from_pkcs11("generating the hashing key", e))?;
    Ok(())
}

/// Generates the AES-256 key that seals offer claims (AES-GCM) inside the
/// token. It encrypts and decrypts and does nothing else: no signing, no
/// wrapping (which would let it move other keys out), no derivation.
pub fn generate_claims_key(session: &Session, label: &str, id: &[u8]) -> Result<(), HsmError> {
    let mut template = custody_template(label, id);
    // `custody_template` forbids decryption, which sealing needs: replace it.
    template.retain(|a| !matches!(a, Attribute::Decrypt(_)));
    template.extend([
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(KeyType::AES),
        Attribute::ValueLen(32.into()),
        Attribute::Encrypt(true),
        Attribute::Decrypt(true),
        Attribute::Sign(false),
        Attribute::Verify(false),
        Attribute::Wrap(false),
    ]);
    session
        .generate_key(&Mechanism::AesKeyGen, &template)
        .map_err(|e| HsmError::from_pkcs11("generating the claims key", e))?;
    Ok(())
}

/// The key types a role's key may have, and the object class it is.
fn kinds(role: KeyRole) -> (ObjectClass, &'static [KeyType]) {
    match role {
        KeyRole::Claims => (ObjectClass::SECRET_KEY, &[KeyType::AES]),
        KeyRole::Hashing | KeyRole::ClaimsMac => (
            ObjectClass::SECRET_KEY,
            &[KeyType::GENERIC_SECRET, KeyType::SHA256_HMAC],
        ),
        KeyRole::Signing | KeyRole::Credential | KeyRole::Audit => (
            ObjectClass::PRIVATE_KEY,
            &[KeyType::EC_EDWARDS, KeyType::EC],
        ),
    }
}

/// Finds the one secret or private key of `role` labelled `label`.
///
/// The template names the class, the key type, the label and
/// `CKA_PRIVATE=true`: anyone may create public objects on a token without
/// logging in, so an object that is not private is never a notary key, and
/// one planted with a key's label must not make the lookup ambiguous.
pub fn find_key(session: &Session, role: KeyRole, label: &str) -> Result<ObjectHandle, HsmError> {
    let (class, key_types) = kinds(role);
    let mut found = Vec::new();
    for key_type in key_types {
        found.extend(
            session
                .find_objects(&[
                    Attribute::Class(class),
                    Attribute::KeyType(*key_type),
                    Attribute::Label(label.as_bytes().to_vec()),
                    Attribute::Private(true),
                ])
                .map_err(|e| HsmError::from_pkcs11("finding a key", e))?,
        );
    }
    match found.as_slice() {
        [one] => Ok(*one),
        [] => Err(HsmError::KeyNotFound(format!(
            "no private {} labelled {label:?} on the token",
            class_name(class)
        ))),
        _ => Err(HsmError::KeyNotFound(format!(
            "{} private objects of class {} labelled {label:?}: labels must be unique",
            found.len(),
            class_name(class)
        ))),
    }
}

fn class_name(class: ObjectClass) -> &'static str {
    if class == ObjectClass::PRIVATE_KEY {
        "private key"
    } else if class == ObjectClass::PUBLIC_KEY {
        "public key"
    } else {
        "secret key"
    }
}

/// Reads the public half of the key pair of `role` labelled `label`.
///
/// Public key objects are public: anyone can plant one with the same label
/// without logging in. When more than one distinct key carries the label,
/// the one that verifies a signature made by the private key (found with
/// `CKA_PRIVATE=true`) is the key pair's.
pub fn read_public_key(
    session: &Session,
    role: KeyRole,
    label: &str,
) -> Result<PublicKey, HsmError> {
    let (_, key_types) = kinds(role);
    let mut candidates: Vec<PublicKey> = Vec::new();
    for key_type in key_types {
        let handles = session
            .find_objects(&[
                Attribute::Class(ObjectClass::PUBLIC_KEY),
                Attribute::KeyType(*key_type),
                Attribute::Label(label.as_bytes().to_vec()),
            ])
            .map_err(|e| HsmError::from_pkcs11("finding a public key", e))?;
        for handle in handles {
            // A planted object that does not parse is simply not a candidate.
            if let Ok(key) = public_key_of(session, handle, label) {
                if !candidates.contains(&key) {
                    candidates.push(key);
                }
            }
        }
    }
    if candidates.len() > 1 {
        let private = find_key(session, role, label)?;
        candidates.retain(|key| pairs_with(session, private, key));
    }
    match candidates.as_slice() {
        [one] => Ok(one.clone()),
        [] => Err(HsmError::KeyNotFound(format!(
            "no usable public key labelled {label:?} on the token"
        ))),
        _ => Err(HsmError::KeyNotFound(format!(
            "{} public keys labelled {label:?} match its private key",
            candidates.len()
        ))),
    }
}

/// Whether `public` verifies a signature made now by `private`.
fn pairs_with(session: &Session, private: ObjectHandle, public: &PublicKey) -> bool {
    use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED, ED25519, UnparsedPublicKey};
    const CHALLENGE: &[u8] = b"notary/key-pair-check";
    let signed = super::sign_with(
        session,
        private,
        public.algorithm(),
        super::capabilities::EcdsaMode::OverDigest,
        CHALLENGE,
    );
    let Ok(signature) = signed else {
        return false;
    };
    let raw = public.raw_bytes();
    let verified = match public.algorithm() {
        Algorithm::EdDSA => UnparsedPublicKey::new(&ED25519, &raw).verify(CHALLENGE, &signature),
        Algorithm::ES256 => {
            UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, &raw).verify(CHALLENGE, &signature)
        }
    };
    verified.is_ok()
}

fn public_key_of(
    session: &Session,
    handle: ObjectHandle,
    label: &str,
) -> Result<PublicKey, HsmError> {
    let attrs = session
        .get_attributes(handle, &[AttributeType::KeyType, AttributeType::EcPoint])
        .map_err(|e| HsmError::from_pkcs11("reading the public key", e))?;
    let mut key_type = None;
    let mut point = None;
    for attr in attrs {
        match attr {
            Attribute::KeyType(t) => key_type = Some(t),
            Attribute::EcPoint(p) => point = Some(p),
            _ => {}
        }
    }
    let alg = match key_type {
        Some(t) if t == KeyType::EC_EDWARDS => Algorithm::EdDSA,
        Some(t) if t == KeyType::EC => Algorithm::ES256,
        _ => {
            return Err(HsmError::Unsupported(format!(
                "key {label:?} is neither Ed25519 nor P-256"
            )));
        }
    };
    let point = point.ok_or_else(|| {
        HsmError::Unsupported(format!(
            "the token does not return CKA_EC_POINT for {label:?}"
        ))
    })?;
    PublicKey::from_ec_point(alg, &point).ok_or_else(|| {
        HsmError::Unsupported(format!(
            "key {label:?}: CKA_EC_POINT is not an Ed25519 or P-256 point"
        ))
    })
}

/// One custody attribute as read from the token; `None` when the token did not return it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CustodyAttribute {
    /// PKCS#11 name, e.g. `CKA_LOCAL`.
    pub name: &'static str,
    /// The value, or `None` if the token would not say.
    pub value: Option<bool>,
    /// The value the custody rule requires, if the rule covers it.
    pub required: Option<bool>,
}

/// The custody evidence of one key, as read from the token.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Custody {
    /// `CKA_LABEL`.
    pub label: String,
    /// `CKA_ID`, hex; `None` if the token would not say.
    pub id: Option<String>,
    /// `CKA_KEY_GEN_MECHANISM`, e.g. `CKM_EC_EDWARDS_KEY_PAIR_GEN`.
    pub key_gen_mechanism: Option<String>,
    /// Key type and size as read from the token, e.g. `HMAC 256-bit`,
    /// `Ed25519`, `P-256`; `None` if the token would not say.
    pub key: Option<String>,
    /// Why the key type or size does not fit the key's role, if it does not.
    #[serde(skip)]
    key_problem: Option<String>,
    /// `CKA_ALLOWED_MECHANISMS`, when the token sets it.
    pub allowed_mechanisms: Option<Vec<String>>,
    /// Whether `CKA_ALLOWED_MECHANISMS` confines the key to mechanisms of
    /// its role (say, ECDSA only): then a usage flag the rule forbids, such
    /// as `CKA_DECRYPT` on a TPM's EC key, grants nothing and is not a
    /// violation.
    pub usage_bounded: bool,
    /// Boolean attributes, the custody rule's first.
    pub attributes: Vec<CustodyAttribute>,
}

impl Custody {
    /// The first thing that breaks the custody rule (made on the token,
    /// never extractable, always sensitive, usable for its one purpose only,
    /// of the right type and size), described for an operator.
    pub fn violation(&self) -> Option<String> {
        if let Some(problem) = &self.key_problem {
            return Some(format!("key {:?}: {problem}", self.label));
        }
        for attr in &self.attributes {
            let Some(required) = attr.required else {
                continue;
            };
            if self.usage_bounded && USAGE_ATTRIBUTES.contains(&attr.name) {
                continue;
            }
            match attr.value {
                None => {
                    return Some(format!(
                        "key {:?}: the token does not report {}",
                        self.label, attr.name
                    ));
                }
                Some(v) if v != required => {
                    return Some(format!(
                        "key {:?}: {} is {} but must be {}",
                        self.label, attr.name, v, required
                    ));
                }
                Some(_) => {}
            }
        }
        None
    }

    /// A one-line summary for logs and `check`.
    pub fn summary(&self) -> String {
        let key = format!("key={}", self.key.as_deref().unwrap_or("unavailable"));
        let allowed = self
            .allowed_mechanisms
            .as_ref()
            .map(|list| format!("CKA_ALLOWED_MECHANISMS={}", list.join(",")));
        std::iter::once(key)
            .chain(allowed)
            .chain(self.attributes.iter().map(|a| match a.value {
                Some(v) => format!("{}={v}", a.name),
                None => format!("{}=unavailable", a.name),
            }))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// Boolean attributes read for a custody report: name, type, value the
/// custody rule requires (if any). A notary key signs (or MACs) and does
/// nothing else: a key that may also derive, decrypt or unwrap could be used
/// to move secrets in or out of the token. The claims key is the one
/// exception, for decryption only (see `rule_for`).
const BOOLEAN_ATTRIBUTES: [(&str, AttributeType, Option<bool>); 10] = [
    ("CKA_LOCAL", AttributeType::Local, Some(true)),
    (
        "CKA_NEVER_EXTRACTABLE",
        AttributeType::NeverExtractable,
        Some(true),
    ),
    (
        "CKA_ALWAYS_SENSITIVE",
        AttributeType::AlwaysSensitive,
        Some(true),
    ),
    ("CKA_EXTRACTABLE", AttributeType::Extractable, Some(false)),
    ("CKA_SENSITIVE", AttributeType::Sensitive, Some(true)),
    ("CKA_PRIVATE", AttributeType::Private, Some(true)),
    ("CKA_DERIVE", AttributeType::Derive, Some(false)),
    ("CKA_DECRYPT", AttributeType::Decrypt, Some(false)),
    ("CKA_UNWRAP", AttributeType::Unwrap, Some(false)),
    ("CKA_MODIFIABLE", AttributeType::Modifiable, None),
];

/// Attributes only secret keys have (a private key cannot encrypt or wrap).
const SECRET_KEY_ATTRIBUTES: [(&str, AttributeType, Option<bool>); 2] = [
    ("CKA_ENCRYPT", AttributeType::Encrypt, Some(false)),
    ("CKA_WRAP", AttributeType::Wrap, Some(false)),
];

/// The claims key's rule differs from the others': it must encrypt and
/// decrypt (its purpose), and must not sign (one key, one purpose: a CMAC
/// with the sealing key would be a second use of the same key material).
const CLAIMS_KEY_ATTRIBUTES: [(&str, AttributeType, Option<bool>); 3] = [
    ("CKA_ENCRYPT", AttributeType::Encrypt, Some(true)),
    ("CKA_WRAP", AttributeType::Wrap, Some(false)),
    ("CKA_SIGN", AttributeType::Sign, Some(false)),
];

/// The custody rule of `role`: the attributes read, each with the value it
/// must have (if the rule covers it).
fn rule_for(role: KeyRole) -> Vec<(&'static str, AttributeType, Option<bool>)> {
    match role {
        KeyRole::Hashing | KeyRole::ClaimsMac => BOOLEAN_ATTRIBUTES
            .iter()
            .chain(SECRET_KEY_ATTRIBUTES.iter())
            .copied()
            .collect(),
        KeyRole::Claims => BOOLEAN_ATTRIBUTES
            .iter()
            .map(|&(name, t, required)| match t {
                AttributeType::Decrypt => (name, t, Some(true)),
                _ => (name, t, required),
            })
            .chain(CLAIMS_KEY_ATTRIBUTES.iter().copied())
            .collect(),
        KeyRole::Signing | KeyRole::Credential | KeyRole::Audit => BOOLEAN_ATTRIBUTES.to_vec(),
    }
}

/// The attributes that grant a use (as opposed to those that say where a
/// key was made and who may read it).
const USAGE_ATTRIBUTES: [&str; 6] = [
    "CKA_DECRYPT",
    "CKA_UNWRAP",
    "CKA_DERIVE",
    "CKA_ENCRYPT",
    "CKA_WRAP",
    "CKA_SIGN",
];

/// Whether `mechanism` belongs to what a key of `role` does: sign (ECDSA,
/// EdDSA), MAC (HMAC-SHA-*), or encrypt (AES modes), and nothing else.
fn serves_role(role: KeyRole, mechanism: MechanismType) -> bool {
    /// `CKM_AES_OFB`, `CKM_AES_CFB64`, `CKM_AES_CFB8`, `CKM_AES_CFB1` (which
    /// cryptoki has no names for).
    const AES_STREAM_MODES: [u64; 4] = [0x2104, 0x2105, 0x2106, 0x2108];
    let of_role: &[MechanismType] = match role {
        KeyRole::Signing | KeyRole::Credential | KeyRole::Audit => &[
            MechanismType::ECDSA,
            MechanismType::ECDSA_SHA1,
            MechanismType::ECDSA_SHA224,
            MechanismType::ECDSA_SHA256,
            MechanismType::ECDSA_SHA384,
            MechanismType::ECDSA_SHA512,
            MechanismType::EDDSA,
        ],
        KeyRole::Hashing | KeyRole::ClaimsMac => &[
            MechanismType::SHA1_HMAC,
            MechanismType::SHA224_HMAC,
            MechanismType::SHA256_HMAC,
            MechanismType::SHA384_HMAC,
            MechanismType::SHA512_HMAC,
        ],
        KeyRole::Claims => &[
            MechanismType::AES_ECB,
            MechanismType::AES_CBC,
            MechanismType::AES_CBC_PAD,
            MechanismType::AES_CTR,
            MechanismType::AES_GCM,
            MechanismType::AES_CFB128,
        ],
    };
    of_role.contains(&mechanism)
        || (role == KeyRole::Claims && AES_STREAM_MODES.contains(&*mechanism))
}

/// The claims key's size: AES-256.
const CLAIMS_KEY_BYTES: usize = 32;

/// The shortest HMAC key accepted, in bytes (256 bits, the output size of
/// HMAC-SHA256).
const MIN_HMAC_KEY_BYTES: usize = 32;

fn boolean_of(attrs: &[Attribute], wanted: AttributeType) -> Option<bool> {
    attrs.iter().find_map(|a| match (wanted, a) {
        (AttributeType::Local, Attribute::Local(v))
        | (AttributeType::NeverExtractable, Attribute::NeverExtractable(v))
        | (AttributeType::AlwaysSensitive, Attribute::AlwaysSensitive(v))
        | (AttributeType::Extractable, Attribute::Extractable(v))
        | (AttributeType::Sensitive, Attribute::Sensitive(v))
        | (AttributeType::Private, Attribute::Private(v))
        | (AttributeType::Derive, Attribute::Derive(v))
        | (AttributeType::Decrypt, Attribute::Decrypt(v))
        | (AttributeType::Unwrap, Attribute::Unwrap(v))
        | (AttributeType::Encrypt, Attribute::Encrypt(v))
        | (AttributeType::Wrap, Attribute::Wrap(v))
        | (AttributeType::Sign, Attribute::Sign(v))
        | (AttributeType::Modifiable, Attribute::Modifiable(v)) => Some(*v),
        _ => None,
    })
}

/// Describes the key's type and size, and says what is wrong with it for
/// `role`: (description, problem).
fn key_description(attrs: &[Attribute], role: KeyRole) -> (Option<String>, Option<String>) {
    let key_type = attrs.iter().find_map(|a| match a {
        Attribute::KeyType(t) => Some(*t),
        _ => None,
    });
    let Some(key_type) = key_type else {
        return (
            None,
            Some("the token does not report CKA_KEY_TYPE".to_owned()),
        );
    };
    if role == KeyRole::Claims {
        return aes_description(attrs, key_type);
    }
    if role == KeyRole::Hashing || role == KeyRole::ClaimsMac {
        let bytes = attrs.iter().find_map(|a| match a {
            Attribute::ValueLen(n) => Some(usize::from(*n)),
            _ => None,
        });
        if key_type != KeyType::GENERIC_SECRET && key_type != KeyType::SHA256_HMAC {
            return (
                Some(key_type.to_string()),
                Some(format!("{key_type} is not an HMAC key")),
            );
        }
        return match bytes {
            Some(n) if n >= MIN_HMAC_KEY_BYTES => (Some(format!("HMAC-{}", n * 8)), None),
            Some(n) => (
                Some(format!("HMAC-{}", n * 8)),
                Some(format!(
                    "an HMAC key of {} bits is too short (at least {} bits)",
                    n * 8,
                    MIN_HMAC_KEY_BYTES * 8
                )),
            ),
            None => (
                Some("HMAC".to_owned()),
                Some("the token does not report CKA_VALUE_LEN".to_owned()),
            ),
        };
    }
    let params = attrs.iter().find_map(|a| match a {
        Attribute::EcParams(p) => Some(p.as_slice()),
        _ => None,
    });
    let curve = match (key_type, params) {
        (t, Some(p)) if t == KeyType::EC_EDWARDS && is_ed25519(p) => "Ed25519",
        (t, Some(P256_PARAMS)) if t == KeyType::EC => "P-256",
        (t, _) => {
            return (
                Some(t.to_string()),
                Some(format!("{t} is neither an Ed25519 nor a P-256 key")),
            );
        }
    };
    (Some(curve.to_owned()), None)
}

/// Describes the claims key: AES of exactly 256 bits.
fn aes_description(attrs: &[Attribute], key_type: KeyType) -> (Option<String>, Option<String>) {
    if key_type != KeyType::AES {
        return (
            Some(key_type.to_string()),
            Some(format!("{key_type} is not an AES key")),
        );
    }
    let bytes = attrs.iter().find_map(|a| match a {
        Attribute::ValueLen(n) => Some(usize::from(*n)),
        _ => None,
    });
    match bytes {
        Some(CLAIMS_KEY_BYTES) => (Some("AES-256".to_owned()), None),
        Some(n) => (
            Some(format!("AES-{}", n * 8)),
            Some(format!("the claims key must be AES-256, not AES-{}", n * 8)),
        ),
        None => (
            Some("AES".to_owned()),
            Some("the token does not report CKA_VALUE_LEN".to_owned()),
        ),
    }
}

/// `CKA_EC_PARAMS` of Ed25519: the OID, or the curve name some modules use.
fn is_ed25519(params: &[u8]) -> bool {
    const NAMED: &[u8] = b"\x13\x0cedwards25519";
    params == ED25519_PARAMS || params == NAMED
}

/// Reads the custody evidence of `handle`, the key of `role`, reporting what
/// the token omits instead of assuming it (`get_attributes` silently skips
/// attributes the token will not return).
pub fn read_custody(
    session: &Session,
    handle: ObjectHandle,
    role: KeyRole,
    label: &str,
) -> Result<Custody, HsmError> {
    let rule = rule_for(role);
    let mut wanted: Vec<AttributeType> = rule.iter().map(|(_, t, _)| *t).collect();
    wanted.extend([AttributeType::Id, AttributeType::KeyType]);
    wanted.push(match role {
        KeyRole::Hashing | KeyRole::Claims | KeyRole::ClaimsMac => AttributeType::ValueLen,
        KeyRole::Signing | KeyRole::Credential | KeyRole::Audit => AttributeType::EcParams,
    });
    let attrs = session
        .get_attributes(handle, &wanted)
        .map_err(|e| HsmError::from_pkcs11("reading custody attributes", e))?;
    let id = attrs.iter().find_map(|a| match a {
        Attribute::Id(bytes) => Some(bytes.iter().map(|b| format!("{b:02x}")).collect()),
        _ => None,
    });
    let (key, key_problem) = key_description(&attrs, role);
    // Read on its own: a key made outside the token reports
    // CK_UNAVAILABLE_INFORMATION here, which cryptoki cannot decode.
    let key_gen_mechanism = session
        .get_attributes(handle, &[AttributeType::KeyGenMechanism])
        .ok()
        .and_then(|attrs| {
            attrs.iter().find_map(|a| match a {
                Attribute::KeyGenMechanism(m) => Some(mechanism_name(*m)),
                _ => None,
            })
        });
    let attributes = rule
        .iter()
        .map(|(name, t, required)| CustodyAttribute {
            name,
            value: boolean_of(&attrs, *t),
            required: *required,
        })
        .collect();
    // Read on its own too: many tokens do not know the attribute.
    let allowed = session
        .get_attributes(handle, &[AttributeType::AllowedMechanisms])
        .ok()
        .and_then(|attrs| {
            attrs.into_iter().find_map(|a| match a {
                Attribute::AllowedMechanisms(list) => Some(list),
                _ => None,
            })
        })
        .filter(|list| !list.is_empty());
    let usage_bounded = allowed
        .as_ref()
        .is_some_and(|list| list.iter().all(|m| serves_role(role, *m)));
    Ok(Custody {
        label: label.to_owned(),
        id,
        key_gen_mechanism,
        key,
        key_problem,
        allowed_mechanisms: allowed.map(|list| list.iter().map(|m| m.to_string()).collect()),
        usage_bounded,
        attributes,
    })
}

/// Narrows a key's usage flags to its role's rule: every usage attribute
/// (`CKA_DECRYPT`, `CKA_UNWRAP`, `CKA_DERIVE`, `CKA_ENCRYPT`, `CKA_WRAP`,
/// `CKA_SIGN`) the rule forbids but the key allows is set to false with
/// `C_SetAttributeValue`. Generic tools (pkcs11-tool, p11tool) leave a
/// module's defaults in place, which on SoftHSM2 let an EC private key
/// decrypt and unwrap. Narrowing only ever takes a permission away;
/// attributes that prove where the key was made (`CKA_LOCAL`,
/// `CKA_NEVER_EXTRACTABLE`, ...) cannot be changed, so a key that fails
/// those stays refused. Returns the names of the attributes changed.
pub fn restrict_usage(
    session: &Session,
    role: KeyRole,
    label: &str,
) -> Result<Vec<&'static str>, HsmError> {
    let handle = find_key(session, role, label)?;
    let custody = read_custody(session, handle, role, label)?;
    let mut narrowed = Vec::new();
    for attr in &custody.attributes {
        let usage = match attr.name {
            "CKA_DECRYPT" => Attribute::Decrypt(false),
            "CKA_UNWRAP" => Attribute::Unwrap(false),
            "CKA_DERIVE" => Attribute::Derive(false),
            "CKA_ENCRYPT" => Attribute::Encrypt(false),
            "CKA_WRAP" => Attribute::Wrap(false),
            "CKA_SIGN" => Attribute::Sign(false),
            _ => continue,
        };
        if attr.required == Some(false) && attr.value == Some(true) {
            session.update_attributes(handle, &[usage]).map_err(|e| {
                HsmError::Unsupported(format!(
                    "key {label:?}: the token would not set {} to false ({e})",
                    attr.name
                ))
            })?;
            narrowed.push(attr.name);
        }
    }
    Ok(narrowed)
}

/// Finds the key of `role` labelled `label` and refuses it unless it
/// satisfies the custody rule.
pub fn find_custodied_key(
    session: &Session,
    role: KeyRole,
    label: &str,
) -> Result<ObjectHandle, HsmError> {
    let handle = find_key(session, role, label)?;
    if let Some(violation) = read_custody(session, handle, role, label)?.violation() {
        return Err(HsmError::Unsupported(format!(
            "refusing to use the HSM keys: {violation}"
        )));
    }
    Ok(handle)
}

fn mechanism_name(m: cryptoki::mechanism::MechanismType) -> String {
    use cryptoki::mechanism::MechanismType as M;
    let known = [
        (M::ECC_EDWARDS_KEY_PAIR_GEN, "CKM_EC_EDWARDS_KEY_PAIR_GEN"),
        (M::ECC_KEY_PAIR_GEN, "CKM_EC_KEY_PAIR_GEN"),
        (M::GENERIC_SECRET_KEY_GEN, "CKM_GENERIC_SECRET_KEY_GEN"),
        (M::RSA_PKCS_KEY_PAIR_GEN, "CKM_RSA_PKCS_KEY_PAIR_GEN"),
        (M::AES_KEY_GEN, "CKM_AES_KEY_GEN"),
    ];
    known
        .iter()
        .find(|(k, _)| *k == m)
        .map(|(_, name)| (*name).to_owned())
        .unwrap_or_else(|| m.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attrs(values: &[(AttributeType, bool)]) -> Vec<Attribute> {
        values
            .iter()
            .map(|(t, v)| match t {
                AttributeType::Local => Attribute::Local(*v),
                AttributeType::NeverExtractable => Attribute::NeverExtractable(*v),
                AttributeType::AlwaysSensitive => Attribute::AlwaysSensitive(*v),
                AttributeType::Extractable => Attribute::Extractable(*v),
                AttributeType::Sensitive => Attribute::Sensitive(*v),
                AttributeType::Private => Attribute::Private(*v),
                AttributeType::Derive => Attribute::Derive(*v),
                AttributeType::Decrypt => Attribute::Decrypt(*v),
                AttributeType::Unwrap => Attribute::Unwrap(*v),
                AttributeType::Encrypt => Attribute::Encrypt(*v),
                AttributeType::Wrap => Attribute::Wrap(*v),
                AttributeType::Sign => Attribute::Sign(*v),
                _ => Attribute::Modifiable(*v),
            })
            .collect()
    }

    /// The custody of an HMAC key as `read_custody` builds it from `read`.
    fn hmac_custody(read: &[Attribute]) -> Custody {
        custody_of(read, KeyRole::Hashing)
    }

    /// The custody of a key of `role` as `read_custody` builds it from `read`.
    fn custody_of(read: &[Attribute], role: KeyRole) -> Custody {
        let (key, key_problem) = key_description(read, role);
        Custody {
            label: "k".to_owned(),
            id: None,
            key_gen_mechanism: None,
            key,
            key_problem,
            allowed_mechanisms: None,
            usage_bounded: false,
            attributes: rule_for(role)
                .iter()
                .map(|(name, t, required)| CustodyAttribute {
                    name,
                    value: boolean_of(read, *t),
                    required: *required,
                })
                .collect(),
        }
    }

    fn sound_hmac(derive: bool, bytes: u64) -> Vec<Attribute> {
        use AttributeType as T;
        let mut read = attrs(&[
            (T::Local, true),
            (T::NeverExtractable, true),
            (T::AlwaysSensitive, true),
            (T::Extractable, false),
            (T::Sensitive, true),
            (T::Private, true),
            (T::Derive, derive),
            (T::Decrypt, false),
            (T::Unwrap, false),
            (T::Encrypt, false),
            (T::Wrap, false),
        ]);
        read.push(Attribute::KeyType(KeyType::GENERIC_SECRET));
        read.push(Attribute::ValueLen(bytes.into()));
        read
    }

    #[test]
    fn a_usage_flag_is_moot_when_allowed_mechanisms_confine_the_key_to_its_role() {
        // A TPM's EC key: CKA_DECRYPT true, but only ECDSA is allowed.
        let mut read = attrs(&[
            (AttributeType::Local, true),
            (AttributeType::NeverExtractable, true),
            (AttributeType::AlwaysSensitive, true),
            (AttributeType::Extractable, false),
            (AttributeType::Sensitive, true),
            (AttributeType::Private, true),
            (AttributeType::Derive, false),
            (AttributeType::Decrypt, true),
            (AttributeType::Unwrap, false),
        ]);
        read.extend([
            Attribute::KeyType(KeyType::EC),
            Attribute::EcParams(P256_PARAMS.to_vec()),
        ]);
        let mut custody = custody_of(&read, KeyRole::Credential);
        assert!(custody.violation().unwrap().contains("CKA_DECRYPT"));
        custody.usage_bounded = true;
        assert_eq!(custody.violation(), None);
        // Never what says where the key was made.
        custody.attributes[0].value = Some(false);
        assert!(custody.violation().unwrap().contains("CKA_LOCAL"));
        assert!(serves_role(
            KeyRole::Credential,
            MechanismType::ECDSA_SHA256
        ));
        assert!(!serves_role(KeyRole::Credential, MechanismType::AES_CBC));
        assert!(!serves_role(KeyRole::Hashing, MechanismType::ECDSA));
        assert!(serves_role(KeyRole::Claims, MechanismType::AES_CTR));
        assert!(!serves_role(KeyRole::Claims, MechanismType::AES_KEY_WRAP));
    }

    #[test]
    fn an_hmac_key_must_not_derive_and_must_have_256_bits() {
        assert_eq!(hmac_custody(&sound_hmac(false, 32)).violation(), None);
        assert_eq!(
            hmac_custody(&sound_hmac(true, 32)).violation().as_deref(),
            Some("key \"k\": CKA_DERIVE is true but must be false")
        );
        let short = hmac_custody(&sound_hmac(false, 16)).violation();
        assert!(
            short
                .as_deref()
                .is_some_and(|v| v.contains("128 bits is too short")),
            "{short:?}"
        );
        let mut aes = sound_hmac(false, 32);
        aes.retain(|a| !matches!(a, Attribute::KeyType(_)));
        aes.push(Attribute::KeyType(KeyType::AES));
        assert!(hmac_custody(&aes).violation().is_some());
        // An attribute the token does not return breaks the rule too.
        let mut silent = sound_hmac(false, 32);
        silent.retain(|a| !matches!(a, Attribute::Wrap(_)));
        assert!(
            hmac_custody(&silent)
                .violation()
                .is_some_and(|v| v.contains("does not report CKA_WRAP"))
        );
    }

    fn sound_aes(extractable: bool, sign: bool, bytes: u64) -> Vec<Attribute> {
        use AttributeType as T;
        let mut read = attrs(&[
            (T::Local, true),
            (T::NeverExtractable, !extractable),
            (T::AlwaysSensitive, true),
            (T::Extractable, extractable),
            (T::Sensitive, true),
            (T::Private, true),
            (T::Derive, false),
            (T::Decrypt, true),
            (T::Unwrap, false),
            (T::Encrypt, true),
            (T::Wrap, false),
            (T::Sign, sign),
        ]);
        read.push(Attribute::KeyType(KeyType::AES));
        read.push(Attribute::ValueLen(bytes.into()));
        read
    }

    #[test]
    fn the_claims_key_encrypts_and_decrypts_and_nothing_else() {
        let sound = custody_of(&sound_aes(false, false, 32), KeyRole::Claims);
        assert_eq!(sound.violation(), None);
        assert_eq!(sound.key.as_deref(), Some("AES-256"));
        let extractable = custody_of(&sound_aes(true, false, 32), KeyRole::Claims).violation();
        assert_eq!(
            extractable.as_deref(),
            Some("key \"k\": CKA_NEVER_EXTRACTABLE is false but must be true")
        );
        let signs = custody_of(&sound_aes(false, true, 32), KeyRole::Claims).violation();
        assert_eq!(
            signs.as_deref(),
            Some("key \"k\": CKA_SIGN is true but must be false")
        );
        let short = custody_of(&sound_aes(false, false, 16), KeyRole::Claims).violation();
        assert!(
            short.as_deref().is_some_and(|v| v.contains("AES-256")),
            "{short:?}"
        );
        // An HMAC key cannot stand in for the claims key, nor the reverse.
        assert!(
            custody_of(&sound_hmac(false, 32), KeyRole::Claims)
                .violation()
                .is_some()
        );
        assert!(
            hmac_custody(&sound_aes(false, false, 32))
                .violation()
                .is_some()
        );
    }
}
