//! Key templates and key discovery on the token.
//!
//! Templates are explicit about every custody attribute instead of relying on
//! the module's defaults, which differ between vendors (some make keys
//! extractable unless told otherwise).

use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::Session;

use super::HsmError;
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

/// Finds exactly one object of `class` labelled `label`.
pub fn find_one(
    session: &Session,
    class: ObjectClass,
    label: &str,
) -> Result<ObjectHandle, HsmError> {
    let found = session
        .find_objects(&[
            Attribute::Class(class),
            Attribute::Label(label.as_bytes().to_vec()),
        ])
        .map_err(|e| HsmError::from_pkcs11("finding a key", e))?;
    match found.as_slice() {
        [one] => Ok(*one),
        [] => Err(HsmError::KeyNotFound(format!(
            "no {} labelled {label:?} on the token",
            class_name(class)
        ))),
        _ => Err(HsmError::KeyNotFound(format!(
            "{} objects of class {} labelled {label:?}: labels must be unique",
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

/// Reads the public half of the signing key labelled `label`.
pub fn read_public_key(session: &Session, label: &str) -> Result<PublicKey, HsmError> {
    let handle = find_one(session, ObjectClass::PUBLIC_KEY, label)?;
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
    /// Boolean attributes, the custody rule's first.
    pub attributes: Vec<CustodyAttribute>,
}

impl Custody {
    /// The first attribute that breaks the custody rule (made on the token,
    /// never extractable, always sensitive), described for an operator.
    pub fn violation(&self) -> Option<String> {
        for attr in &self.attributes {
            let Some(required) = attr.required else {
                continue;
            };
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
        self.attributes
            .iter()
            .map(|a| match a.value {
                Some(v) => format!("{}={v}", a.name),
                None => format!("{}=unavailable", a.name),
            })
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// Boolean attributes read for a custody report: name, type, value the
/// custody rule requires (if any).
const BOOLEAN_ATTRIBUTES: [(&str, AttributeType, Option<bool>); 7] = [
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
    ("CKA_MODIFIABLE", AttributeType::Modifiable, None),
];

fn boolean_of(attrs: &[Attribute], wanted: AttributeType) -> Option<bool> {
    attrs.iter().find_map(|a| match (wanted, a) {
        (AttributeType::Local, Attribute::Local(v))
        | (AttributeType::NeverExtractable, Attribute::NeverExtractable(v))
        | (AttributeType::AlwaysSensitive, Attribute::AlwaysSensitive(v))
        | (AttributeType::Extractable, Attribute::Extractable(v))
        | (AttributeType::Sensitive, Attribute::Sensitive(v))
        | (AttributeType::Private, Attribute::Private(v))
        | (AttributeType::Modifiable, Attribute::Modifiable(v)) => Some(*v),
        _ => None,
    })
}

/// Reads the custody evidence of `handle`, reporting what the token omits
/// instead of assuming it (`get_attributes` silently skips attributes the
/// token will not return).
pub fn read_custody(
    session: &Session,
    handle: ObjectHandle,
    label: &str,
) -> Result<Custody, HsmError> {
    let mut wanted: Vec<AttributeType> = BOOLEAN_ATTRIBUTES.iter().map(|(_, t, _)| *t).collect();
    wanted.push(AttributeType::Id);
    let attrs = session
        .get_attributes(handle, &wanted)
        .map_err(|e| HsmError::from_pkcs11("reading custody attributes", e))?;
    let id = attrs.iter().find_map(|a| match a {
        Attribute::Id(bytes) => Some(bytes.iter().map(|b| format!("{b:02x}")).collect()),
        _ => None,
    });
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
    let attributes = BOOLEAN_ATTRIBUTES
        .iter()
        .map(|(name, t, required)| CustodyAttribute {
            name,
            value: boolean_of(&attrs, *t),
            required: *required,
        })
        .collect();
    Ok(Custody {
        label: label.to_owned(),
        id,
        key_gen_mechanism,
        attributes,
    })
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
