//! The use cases: create and manage offers, redeem a code for a token, manage
//! API keys. Plain Rust: no HTTP types, no SQL, no PKCS#11 types.

pub mod access;
mod api_keys;
pub mod audit_log;
pub mod c_nonce;
mod certificates;
pub mod claims;
pub mod credential;
pub mod custody;
pub mod hashing;
mod introspect;
pub mod keys;
pub mod notification;
mod offers;
pub mod profiles;
pub mod proofs;
pub mod random;
mod redeem;
pub mod status;
mod token;

use std::collections::{BTreeMap, BTreeSet};

pub use api_keys::CreatedApiKey;
pub use offers::{
    CreateOffer, CreatedOffer, OFFER_REFERENCE_PATH, OfferByReference, OfferError, OfferView,
    TransactionCodeRequest, parse_filter,
};
pub use redeem::{Binding, RedeemError, check_shape};

use crate::config::{Config, ConfigError};
use crate::hsm::{Hsm, HsmError};
use crate::oid4vci::attestation::TrustedProviders;
use crate::oid4vci::claims::DeclaredClaims;
use crate::store::{Store, StoreError};
use random::RandomError;

/// A failure inside notary that the client cannot fix. The HTTP layer turns
/// it into a bare `server_error` and logs the detail.
#[derive(Debug, thiserror::Error)]
pub enum InternalError {
    /// The HSM failed.
    #[error(transparent)]
    Hsm(#[from] HsmError),
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The OS random source failed.
    #[error(transparent)]
    Random(#[from] RandomError),
    /// No key is active (a set-up before its first `keys rotate`).
    #[error("no active signing key: run `notary keys rotate`")]
    NoSigningKey,
    /// A task running a use case ended without an answer (it panicked).
    #[error("a task ended without an answer: {0}")]
    Task(String),
}

/// The offer and token policy, taken from the config once at start.
#[derive(Debug, Clone)]
pub struct Policy {
    /// notary's public URL: the `iss` of tokens.
    pub public_url: String,
    /// The credential issuer: the `aud` of tokens and the offers' issuer.
    pub credential_issuer: String,
    /// Access token lifetime, seconds.
    pub access_token_ttl: u64,
    /// JOSE `typ` of access tokens.
    pub access_token_typ: String,
    /// Default offer lifetime, seconds.
    pub default_offer_ttl: u64,
    /// Longest offer lifetime, seconds.
    pub max_offer_ttl: u64,
    /// Wrong PINs before the lock.
    pub max_tx_code_attempts: u32,
    /// Default PIN length.
    pub tx_code_length: u32,
    /// `c_nonce_expires_in`, seconds.
    pub c_nonce_ttl: u64,
    /// Credential configuration ids an offer may name.
    pub known_credentials: BTreeSet<String>,
    /// The claims each credential configuration declares (`None`: it
    /// declares none, and an offer's claims for it are not checked).
    pub declared_claims: BTreeMap<String, Option<DeclaredClaims>>,
    /// Origin line (and key name) of audit checkpoints.
    pub audit_origin: String,
    /// How long a running server may take to notice a rotation, seconds.
    pub key_refresh_secs: u64,
    /// Oldest DPoP proof or attestation PoP accepted, seconds.
    pub proof_max_age_secs: u64,
    /// Whether DPoP proofs must carry a server nonce.
    pub require_dpop_nonce: bool,
    /// Wallet providers whose client attestations verify.
    pub trusted_wallet_providers: TrustedProviders,
    /// Whether notary issues credentials itself (else it is the
    /// authorization server alone).
    pub serves_credentials: bool,
    /// Whether token responses carry the legacy `c_nonce`.
    pub legacy_c_nonce: bool,
    /// How each credential configuration is issued (empty when notary does
    /// not issue credentials).
    pub credential_profiles: BTreeMap<String, profiles::CredentialProfile>,
    /// Lifetime of issued credentials, seconds.
    pub credential_validity: u64,
    /// Most proofs (credentials) per credential request.
    pub batch_size: usize,
    /// Status lists.
    pub status: crate::config::StatusConfig,
}

impl Policy {
    /// Takes the policy out of a validated config (reading the trusted
    /// wallet providers' keys).
    pub fn from_config(config: &Config) -> Result<Self, ConfigError> {
        let i = &config.issuance;
        Ok(Policy {
            public_url: config.server.public_url.clone(),
            credential_issuer: config.credential_issuer().to_owned(),
            access_token_ttl: i.access_token_ttl_secs,
            access_token_typ: i.access_token_typ.clone(),
            default_offer_ttl: i.default_offer_ttl_secs,
            max_offer_ttl: i.max_offer_ttl_secs,
            max_tx_code_attempts: i.max_tx_code_attempts,
            tx_code_length: i.tx_code_length,
            c_nonce_ttl: i.c_nonce_ttl_secs,
            known_credentials: config
                .credential_issuer
                .credential_configurations_supported
                .keys()
                .cloned()
                .collect(),
            declared_claims: config
                .credential_issuer
                .credential_configurations_supported
                .iter()
                .map(|(id, configuration)| (id.clone(), DeclaredClaims::of(configuration)))
                .collect(),
            audit_origin: config.audit_origin(),
            key_refresh_secs: config.keys.refresh_secs,
            proof_max_age_secs: i.proof_max_age_secs,
            require_dpop_nonce: i.require_dpop_nonce,
            trusted_wallet_providers: config.trusted_wallet_providers()?,
            serves_credentials: config.serves_credentials(),
            legacy_c_nonce: config.legacy_c_nonce(),
            credential_profiles: if config.serves_credentials() {
                profiles::read(&config.credential_issuer.credential_configurations_supported)
                    .map_err(ConfigError::Invalid)?
            } else {
                BTreeMap::new()
            },
            credential_validity: i.credential_validity_secs,
            batch_size: usize::try_from(i.batch_size).unwrap_or(1),
            status: config.status.clone(),
        })
    }
}

/// The use cases over one HSM and one store. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Notary {
    hsm: Hsm,
    store: Store,
    policy: std::sync::Arc<Policy>,
    keys: keys::SharedKeyRing,
    nonces: std::sync::Arc<proofs::NonceCache>,
    epoch_keys: std::sync::Arc<c_nonce::EpochKeys>,
    status_lists: std::sync::Arc<status::StatusState>,
    revocations: std::sync::Arc<redeem::RevocationsInFlight>,
    /// The largest checkpoint this process signed or verified: a new one
    /// must extend it even if checkpoint rows vanish from the database.
    last_checkpoint: audit_log::LastCheckpoint,
}

impl Notary {
    /// Wires the use cases to their HSM, store and policy, loading the
    /// signing keys of both purposes (each checked against the token and
    /// the custody rule).
    pub async fn open(hsm: Hsm, store: Store, policy: Policy) -> Result<Self, keys::KeyError> {
        let ring = keys::LoadedKeys::load(&hsm, &store).await?;
        Ok(Notary {
            hsm,
            store,
            policy: std::sync::Arc::new(policy),
            keys: std::sync::Arc::new(std::sync::RwLock::new(std::sync::Arc::new(ring))),
            nonces: std::sync::Arc::default(),
            epoch_keys: std::sync::Arc::default(),
            status_lists: std::sync::Arc::default(),
            revocations: std::sync::Arc::default(),
            last_checkpoint: audit_log::LastCheckpoint::default(),
        })
    }

    /// The HSM.
    pub fn hsm(&self) -> &Hsm {
        &self.hsm
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The policy.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }
}

/// Current time, unix seconds.
pub fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// Unix seconds as RFC 3339 (UTC).
pub fn rfc3339(unix: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}
