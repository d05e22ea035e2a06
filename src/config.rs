//! Typed configuration (`notary.toml`): loading, validation and secret sources.
//!
//! Relative paths in the file are resolved against the directory that holds
//! the file (`notary init` writes absolute paths where the PKCS#11 module
//! needs them, so its set-ups stay where they were made).
//! Secrets (the HSM PIN) are never in the file itself: it names where to read
//! them from.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::hsm::uri::label_from;
use crate::oid4vci::attestation::TrustedProviders;
use crate::secret::HsmPin;

/// Everything that can be wrong with a configuration, in words an operator can act on.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML or has unknown or mistyped fields.
    #[error("invalid config file {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message, which names the field.
        message: String,
    },
    /// A value is well-formed but not acceptable.
    #[error("invalid config: {0}")]
    Invalid(String),
    /// The HSM PIN could not be obtained from its configured source.
    #[error("cannot read the HSM PIN: {0}")]
    Pin(String),
}

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Listener and public identity.
    pub server: ServerConfig,
    /// TLS certificate and key.
    pub tls: TlsConfig,
    /// Database location.
    pub database: DatabaseConfig,
    /// PKCS#11 module, token and keys.
    pub hsm: HsmConfig,
    /// Offer and token policy.
    #[serde(default)]
    pub issuance: IssuanceConfig,
    /// Per-address flood limit for unknown codes.
    #[serde(default)]
    pub flood: FloodConfig,
    /// Credential Issuer metadata served when notary is its own credential issuer.
    #[serde(default)]
    pub credential_issuer: CredentialIssuerConfig,
    /// Audit checkpoints and their verification.
    #[serde(default)]
    pub audit: AuditConfig,
    /// Signing key refresh.
    #[serde(default)]
    pub keys: KeysConfig,
    /// The Prometheus endpoint.
    #[serde(default)]
    pub metrics: MetricsConfig,
    /// Log format.
    #[serde(default)]
    pub log: LogConfig,
    /// How long finished offers are kept.
    #[serde(default)]
    pub retention: RetentionConfig,
    /// Trusted wallet providers for client attestation.
    #[serde(default)]
    pub client_attestation: ClientAttestationConfig,
    /// Credential status lists.
    #[serde(default)]
    pub status: StatusConfig,
    /// Directory of the config file; relative paths are resolved against it.
    #[serde(skip)]
    pub base_dir: PathBuf,
}

/// `[server]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Socket address to listen on, e.g. `127.0.0.1:8443`.
    pub listen: std::net::SocketAddr,
    /// The https URL wallets reach notary at; it is the OAuth `issuer`.
    pub public_url: String,
    /// Seconds a client gets to send a request's headers; also how long an
    /// idle keep-alive connection stays open (slowloris protection).
    #[serde(default = "default_read_timeout")]
    pub header_read_timeout_secs: u64,
    /// Seconds a client gets to send a request's body.
    #[serde(default = "default_read_timeout")]
    pub body_read_timeout_secs: u64,
    /// Open connections served at once; further ones wait in the kernel's backlog.
    #[serde(default = "default_max_connections_server")]
    pub max_connections: usize,
    /// Connections open at once from one IPv4 address or IPv6 /64; more are
    /// closed at once, so that one host cannot take every connection slot.
    #[serde(default = "default_max_connections_per_address")]
    pub max_connections_per_address: usize,
    /// Seconds a client gets, from connecting, to finish the TLS handshake.
    #[serde(default = "default_handshake_timeout")]
    pub handshake_timeout_secs: u64,
    /// Seconds requests in flight get to finish after SIGTERM.
    #[serde(default = "default_read_timeout")]
    pub shutdown_grace_secs: u64,
}

fn default_read_timeout() -> u64 {
    10
}

fn default_max_connections_server() -> usize {
    1024
}

fn default_max_connections_per_address() -> usize {
    32
}

fn default_handshake_timeout() -> u64 {
    5
}

/// `[tls]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM private key (PKCS#8, SEC1 or PKCS#1).
    pub key: PathBuf,
}

/// `[database]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseConfig {
    /// `sqlite:PATH` (relative to the config directory) or `postgres://...`.
    pub url: String,
    /// Upper bound of pooled connections.
    #[serde(default = "default_max_connections")]
    pub max_connections: u32,
}

fn default_max_connections() -> u32 {
    8
}

/// `[hsm]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HsmConfig {
    /// Path of the PKCS#11 module (`.so`).
    pub module: PathBuf,
    /// Label of the token that holds the keys (slot ids are not stable), or
    /// an RFC 7512 URI naming it: `pkcs11:token=notary`.
    pub token: String,
    /// Label of the HMAC secret key used to hash codes, PINs and API keys,
    /// or a URI naming it: `pkcs11:token=notary;object=notary-hmac-1`.
    pub hashing_key: String,
    /// Label of the key that signs audit checkpoints (Ed25519, or P-256 on
    /// modules without Ed25519; not the Notary key), or a URI naming it.
    pub audit_key: String,
    /// Label of the AES-256 key that seals offer claims, or a URI naming it.
    /// Default `notary-claims-1`, the label `notary init` and
    /// `notary keys generate-claims-key` give it.
    #[serde(default = "default_claims_key")]
    pub claims_key: String,
    /// Label of an HMAC-SHA256 key, or a URI naming it: when set, claims are
    /// sealed with AES-256-CBC under `claims_key` and authenticated with
    /// HMAC-SHA256 under this key (encrypt-then-MAC), for modules without
    /// AES-GCM such as a TPM. Unset: AES-256-GCM. Fixed for the life of
    /// a set-up: claims sealed one way cannot be opened the other.
    pub claims_mac_key: Option<String>,
    /// The cipher under `claims_mac_key`: "cbc" (the default, AES-256-CBC)
    /// or "ctr" (AES-256-CTR whose keystream the token makes with
    /// CKM_AES_ECB), for modules or links with neither GCM nor CBC, such as
    /// p11-kit 0.24's client. Fixed for the life of a set-up, like the key.
    pub claims_cipher: Option<crate::hsm::capabilities::MacCipher>,
    /// Read the PIN from this file (mode 0600 or stricter).
    pub pin_file: Option<PathBuf>,
    /// Read the PIN from this systemd credential (`$CREDENTIALS_DIRECTORY/NAME`).
    pub pin_credential: Option<String>,
    /// Read the PIN from this environment variable (development only).
    pub pin_env: Option<String>,
    /// Environment the PKCS#11 module reads at load time (e.g. `SOFTHSM2_CONF`).
    /// notary re-executes itself with these set before it starts any thread.
    #[serde(default)]
    pub module_env: BTreeMap<String, String>,
    /// Sessions kept for concurrent HSM operations (default: 2 per core).
    pub sessions: Option<usize>,
    /// Longest wait for one HSM operation (queueing included) before the
    /// request fails with 500 and `/readyz` with 503, milliseconds.
    #[serde(default = "default_hsm_timeout")]
    pub operation_timeout_ms: u64,
}

/// The claims key's label when `hsm.claims_key` is not set.
pub const DEFAULT_CLAIMS_KEY: &str = "notary-claims-1";

fn default_claims_key() -> String {
    DEFAULT_CLAIMS_KEY.to_owned()
}

fn default_hsm_timeout() -> u64 {
    5_000
}

impl HsmConfig {
    /// The token label: `token` itself, or its `token` attribute when it is
    /// a PKCS#11 URI (`pkcs11:token=notary`). Validated at load.
    pub fn token_label(&self) -> String {
        label_from(&self.token, "token").unwrap_or_else(|_| self.token.clone())
    }

    /// The hashing key's label (plain, or a URI's `object` attribute).
    pub fn hashing_key_label(&self) -> String {
        label_from(&self.hashing_key, "object").unwrap_or_else(|_| self.hashing_key.clone())
    }

    /// The audit key's label (plain, or a URI's `object` attribute).
    pub fn audit_key_label(&self) -> String {
        label_from(&self.audit_key, "object").unwrap_or_else(|_| self.audit_key.clone())
    }

    /// The claims key's label (plain, or a URI's `object` attribute).
    pub fn claims_key_label(&self) -> String {
        label_from(&self.claims_key, "object").unwrap_or_else(|_| self.claims_key.clone())
    }

    /// The claims MAC key's label, when one is configured.
    pub fn claims_mac_key_label(&self) -> Option<String> {
        self.claims_mac_key
            .as_ref()
            .map(|key| label_from(key, "object").unwrap_or_else(|_| key.clone()))
    }
}

/// Which error a wrong PIN gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum WrongPinError {
    /// RFC 6749 / OID4VCI 1.0: `invalid_grant`.
    #[default]
    InvalidGrant,
    /// OID4VCI 1.1: `invalid_tx_code`.
    InvalidTxCode,
}

/// How a locked offer is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum LockedResponse {
    /// 429 `slow_down`, as the seed API does.
    #[default]
    SlowDown,
    /// 400 `invalid_grant`, as the OID4VCI 1.0 errata suggest.
    InvalidGrant,
}

/// `[issuance]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IssuanceConfig {
    /// When false the token endpoint answers 404 and the grant is not advertised.
    pub pre_authorized_code_enabled: bool,
    /// The credential issuer identifier; defaults to `server.public_url`.
    pub credential_issuer: Option<String>,
    /// Lifetime of access tokens, seconds (at most 300 for bearer tokens).
    pub access_token_ttl_secs: u64,
    /// JOSE `typ` of access tokens.
    pub access_token_typ: String,
    /// Default offer lifetime, seconds.
    pub default_offer_ttl_secs: u64,
    /// Longest offer lifetime an admin may ask for, seconds.
    pub max_offer_ttl_secs: u64,
    /// Wrong PINs allowed before an offer is locked for good.
    pub max_tx_code_attempts: u32,
    /// Length of generated PINs when the request does not say.
    pub tx_code_length: u32,
    /// Lifetime of the `c_nonce` returned with a token, seconds.
    pub c_nonce_ttl_secs: u64,
    /// Error for a wrong PIN.
    pub wrong_pin_error: WrongPinError,
    /// Response for a locked offer.
    pub locked_response: LockedResponse,
    /// Refuse token requests without a DPoP proof (RFC 9449).
    pub require_dpop: bool,
    /// Require DPoP proofs to carry a server nonce (`use_dpop_nonce`).
    pub require_dpop_nonce: bool,
    /// Refuse token requests without a client attestation (HAIP).
    pub require_client_attestation: bool,
    /// Oldest DPoP proof or attestation PoP accepted, by its `iat`, seconds.
    pub proof_max_age_secs: u64,
    /// How long an issued credential is valid (`exp`), seconds.
    pub credential_validity_secs: u64,
    /// Most key proofs (and so credentials) per credential request:
    /// `batch_credential_issuance.batch_size`.
    pub batch_size: u32,
    /// Whether token responses carry the `c_nonce` of earlier drafts.
    /// Default: on when notary is the credential issuer, off when it is the
    /// authorization server alone (the nonce would be one nobody checks).
    pub legacy_c_nonce: Option<bool>,
}

impl Default for IssuanceConfig {
    fn default() -> Self {
        Self {
            pre_authorized_code_enabled: true,
            credential_issuer: None,
            access_token_ttl_secs: 300,
            access_token_typ: "at+jwt".to_owned(),
            default_offer_ttl_secs: 600,
            max_offer_ttl_secs: 30 * 24 * 3600,
            max_tx_code_attempts: 5,
            tx_code_length: 6,
            c_nonce_ttl_secs: 300,
            wrong_pin_error: WrongPinError::default(),
            locked_response: LockedResponse::default(),
            require_dpop: false,
            require_dpop_nonce: false,
            require_client_attestation: false,
            proof_max_age_secs: 300,
            credential_validity_secs: 365 * 24 * 3600,
            batch_size: 10,
            legacy_c_nonce: None,
        }
    }
}

/// `[client_attestation]`: which wallet providers' attestations are trusted.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct ClientAttestationConfig {
    /// A JWKS file with the wallet providers' public keys. Without it no
    /// attestation verifies.
    pub trusted_keys_file: Option<PathBuf>,
}

/// `[flood]`: how many failing requests that cost HSM or database work one
/// client address may send per window.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FloodConfig {
    /// Failing requests allowed per address and window (formerly
    /// `max_unknown_codes`, still accepted).
    #[serde(alias = "max_unknown_codes")]
    pub max_failures: u32,
    /// Window length, seconds.
    pub window_secs: u64,
    /// Distinct addresses (IPv6: /64 networks) tracked per window; beyond
    /// it, newcomers share one budget.
    pub max_addresses: usize,
}

impl Default for FloodConfig {
    fn default() -> Self {
        Self {
            max_failures: 20,
            window_secs: 60,
            max_addresses: 100_000,
        }
    }
}

/// `[credential_issuer]`: metadata for `/.well-known/openid-credential-issuer`.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct CredentialIssuerConfig {
    /// The credential endpoint of another credential issuer, when notary is
    /// its authorization server only. Unset (or notary's own
    /// `/oid4vci/credential`): notary issues the credentials itself.
    pub credential_endpoint: Option<String>,
    /// Issuer `display` entries (`[{name, locale, logo}]`), served in the
    /// metadata and shown on the offer page.
    pub display: Option<serde_json::Value>,
    /// `credential_configurations_supported`, passed through as JSON.
    /// Offers may only name configurations listed here.
    pub credential_configurations_supported: serde_json::Map<String, serde_json::Value>,
}

/// `[audit]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditConfig {
    /// Origin line and key name of checkpoints (default: public URL host + `/notary-audit`).
    pub origin: Option<String>,
    /// Seconds between checkpoints (one is also written at shutdown).
    pub checkpoint_interval_secs: u64,
    /// Append every checkpoint to this file too (ship it off the host).
    pub checkpoint_file: Option<PathBuf>,
    /// The audit key's signed-note verifier key, written by `notary init`;
    /// `notary audit verify` trusts only this key.
    pub verifier_key_file: PathBuf,
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self {
            origin: None,
            checkpoint_interval_secs: 300,
            checkpoint_file: None,
            verifier_key_file: PathBuf::from("audit-key.pub"),
        }
    }
}

/// `[metrics]`
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Address of the plain-HTTP `/metrics` listener; keep it on loopback.
    /// Absent: no metrics listener.
    pub listen: Option<std::net::SocketAddr>,
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable (default; colours only on a terminal).
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// `[log]`
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `text` or `json`.
    pub format: LogFormat,
}

/// `[retention]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionConfig {
    /// Seconds a redeemed, expired, locked or revoked offer is kept before
    /// it is deleted (its audit entries stay).
    pub offers_secs: u64,
    /// Seconds between sweeps.
    pub sweep_interval_secs: u64,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        Self {
            offers_secs: 7 * 24 * 3600,
            sweep_interval_secs: 300,
        }
    }
}

/// `[status]`: revocation and suspension through status lists.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StatusConfig {
    /// Whether issued credentials carry a status reference.
    pub enabled: bool,
    /// Entries per list (at least 131,072, the Bitstring Status List minimum).
    pub list_size: u32,
    /// Longest time from a status change to the list every instance serves,
    /// seconds: lists are re-signed at most once per interval.
    pub sign_interval_secs: u64,
    /// How long a signed list is valid (`exp`, `validUntil`), seconds.
    pub list_validity_secs: u64,
    /// How long relying parties may cache a list (`ttl`, `max-age`), seconds.
    pub ttl_secs: u64,
}

impl Default for StatusConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            list_size: 131_072,
            sign_interval_secs: 60,
            list_validity_secs: 24 * 3600,
            ttl_secs: 300,
        }
    }
}

/// `[keys]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KeysConfig {
    /// How often a running server looks for rotated keys, seconds.
    pub refresh_secs: u64,
}

impl Default for KeysConfig {
    fn default() -> Self {
        Self { refresh_secs: 5 }
    }
}

impl Config {
    /// The origin (and verifier key name) of audit checkpoints.
    pub fn audit_origin(&self) -> String {
        self.audit.origin.clone().unwrap_or_else(|| {
            let host = self
                .server
                .public_url
                .trim_start_matches("https://")
                .split('/')
                .next()
                .unwrap_or("notary");
            format!("{host}/notary-audit")
        })
    }

    /// Reads and validates the file at `path`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Parses and validates `text` as the file at `path` (relative paths
    /// resolve against its directory; nothing else is read).
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let mut config: Config = toml::from_str(text).map_err(|e| {
            // toml's own Display spans several lines; keep the error on one.
            // Counted in bytes: a span need not fall on a char boundary.
            let line = e.span().map(|span| {
                let before = &text.as_bytes()[..span.start.min(text.len())];
                before.iter().filter(|b| **b == b'\n').count() + 1
            });
            let message = e.message().trim_end().replace('\n', "; ");
            ConfigError::Parse {
                path: path.to_owned(),
                message: match line {
                    Some(line) => format!("line {line}: {message}"),
                    None => message,
                },
            }
        })?;
        config.base_dir = path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        config.validate()?;
        Ok(config)
    }

    /// Resolves a path from the file against the config directory.
    pub fn resolve(&self, path: &Path) -> PathBuf {
        if path.is_absolute() {
            path.to_owned()
        } else {
            self.base_dir.join(path)
        }
    }

    /// The credential issuer identifier (defaults to the public URL).
    pub fn credential_issuer(&self) -> &str {
        self.issuance
            .credential_issuer
            .as_deref()
            .unwrap_or(&self.server.public_url)
    }

    /// The URL of notary's own credential endpoint.
    pub fn own_credential_endpoint(&self) -> String {
        format!("{}/oid4vci/credential", self.server.public_url)
    }

    /// Whether notary is the credential issuer (serves the credential,
    /// nonce and notification endpoints), rather than the authorization
    /// server alone for a credential issuer on another host.
    pub fn serves_credentials(&self) -> bool {
        self.credential_issuer() == self.server.public_url
            && self
                .credential_issuer
                .credential_endpoint
                .as_deref()
                .is_none_or(|e| e == self.own_credential_endpoint())
    }

    /// Whether token responses carry the legacy `c_nonce`.
    pub fn legacy_c_nonce(&self) -> bool {
        self.issuance
            .legacy_c_nonce
            .unwrap_or_else(|| self.serves_credentials())
    }

    /// The database URL with a relative SQLite path resolved.
    pub fn database_url(&self) -> String {
        match self.database.url.strip_prefix("sqlite:") {
            Some(rest) => {
                let path = rest.trim_start_matches("//");
                format!("sqlite:{}", self.resolve(Path::new(path)).display())
            }
            None => self.database.url.clone(),
        }
    }

    /// Module environment with relative file paths resolved.
    pub fn module_env(&self) -> BTreeMap<String, String> {
        self.hsm
            .module_env
            .iter()
            .map(|(k, v)| {
                let p = Path::new(v);
                let value = if p.is_relative() && self.base_dir.join(p).exists() {
                    self.resolve(p).display().to_string()
                } else {
                    v.clone()
                };
                (k.clone(), value)
            })
            .collect()
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |m: String| Err(ConfigError::Invalid(m));
        let url = &self.server.public_url;
        if !url.starts_with("https://") || url.ends_with('/') {
            return invalid(format!(
                "server.public_url must be an https URL without a trailing slash, got {url:?}"
            ));
        }
        if let Some(ci) = &self.issuance.credential_issuer {
            if !ci.starts_with("https://") || ci.ends_with('/') {
                return invalid(format!(
                    "issuance.credential_issuer must be an https URL without a trailing slash, got {ci:?}"
                ));
            }
        }
        let i = &self.issuance;
        if i.access_token_ttl_secs == 0 || i.access_token_ttl_secs > 300 {
            return invalid(format!(
                "issuance.access_token_ttl_secs must be 1..=300 (OID4VCI §13.10), got {}",
                i.access_token_ttl_secs
            ));
        }
        // An offer deleted while its token lives could no longer have that
        // token revoked when the code is replayed.
        if self.retention.offers_secs < i.access_token_ttl_secs {
            return invalid(format!(
                "retention.offers_secs ({}) must be at least issuance.access_token_ttl_secs ({})",
                self.retention.offers_secs, i.access_token_ttl_secs
            ));
        }
        if i.max_tx_code_attempts == 0 || i.max_tx_code_attempts > 100 {
            return invalid("issuance.max_tx_code_attempts must be 1..=100".to_owned());
        }
        if !(4..=12).contains(&i.tx_code_length) {
            return invalid("issuance.tx_code_length must be 4..=12".to_owned());
        }
        if i.default_offer_ttl_secs == 0 || i.default_offer_ttl_secs > i.max_offer_ttl_secs {
            return invalid(
                "issuance.default_offer_ttl_secs must be positive and at most max_offer_ttl_secs"
                    .to_owned(),
            );
        }
        if i.c_nonce_ttl_secs == 0 || i.c_nonce_ttl_secs > 86_400 {
            return invalid("issuance.c_nonce_ttl_secs must be 1..=86400".to_owned());
        }
        if i.proof_max_age_secs == 0 || i.proof_max_age_secs > 3600 {
            return invalid("issuance.proof_max_age_secs must be 1..=3600".to_owned());
        }
        if i.require_client_attestation && self.client_attestation.trusted_keys_file.is_none() {
            return invalid(
                "issuance.require_client_attestation needs client_attestation.trusted_keys_file"
                    .to_owned(),
            );
        }
        if i.credential_validity_secs == 0 || i.credential_validity_secs > 10 * 365 * 86_400 {
            return invalid("issuance.credential_validity_secs must be 1..=315360000".to_owned());
        }
        if i.batch_size == 0 || i.batch_size > 100 {
            return invalid("issuance.batch_size must be 1..=100".to_owned());
        }
        if self.serves_credentials() {
            crate::issuance::profiles::read(
                &self.credential_issuer.credential_configurations_supported,
            )
            .map_err(ConfigError::Invalid)?;
            // Issuer keys are published at the host's root
            // (/.well-known/jwt-vc-issuer, /.well-known/did.json), where
            // verifiers look for the keys of an issuer without a path.
            let url = &self.server.public_url;
            if url.trim_start_matches("https://").split_once('/').is_some() {
                return invalid(format!(
                    "server.public_url must have no path while notary issues credentials (its issuer metadata and did:web document are served at the host's root), got {url:?}"
                ));
            }
            crate::formats::did::did_web(url).map_err(|e| {
                ConfigError::Invalid(format!(
                    "server.public_url {url:?} cannot name notary's did:web: {e}"
                ))
            })?;
        }
        let st = &self.status;
        if st.list_size < 131_072 || !st.list_size.is_power_of_two() || st.list_size > 1 << 24 {
            return invalid(
                "status.list_size must be a power of two from 131072 to 16777216".to_owned(),
            );
        }
        if st.sign_interval_secs == 0 || st.sign_interval_secs > 3600 {
            return invalid("status.sign_interval_secs must be 1..=3600".to_owned());
        }
        if st.list_validity_secs < 4 * st.sign_interval_secs || st.ttl_secs == 0 {
            return invalid(
                "status.list_validity_secs must be at least 4 × sign_interval_secs, and ttl_secs positive"
                    .to_owned(),
            );
        }
        if i.access_token_typ.is_empty() {
            return invalid("issuance.access_token_typ must not be empty".to_owned());
        }
        let sv = &self.server;
        if sv.header_read_timeout_secs == 0
            || sv.body_read_timeout_secs == 0
            || sv.max_connections == 0
            || sv.max_connections_per_address == 0
            || sv.handshake_timeout_secs == 0
        {
            return invalid(
                "server.header_read_timeout_secs, body_read_timeout_secs, max_connections, max_connections_per_address and handshake_timeout_secs must be positive"
                    .to_owned(),
            );
        }
        if self.flood.max_failures == 0
            || self.flood.window_secs == 0
            || self.flood.max_addresses == 0
        {
            return invalid(
                "flood.max_failures, flood.window_secs and flood.max_addresses must be positive"
                    .to_owned(),
            );
        }
        for (field, value, attribute) in [
            ("hsm.token", &self.hsm.token, "token"),
            ("hsm.hashing_key", &self.hsm.hashing_key, "object"),
            ("hsm.audit_key", &self.hsm.audit_key, "object"),
            ("hsm.claims_key", &self.hsm.claims_key, "object"),
        ] {
            if let Err(e) = label_from(value, attribute) {
                return invalid(format!("{field}: {e}"));
            }
        }
        if self.hsm.claims_cipher.is_some() && self.hsm.claims_mac_key.is_none() {
            return invalid(
                "hsm.claims_cipher is only used with hsm.claims_mac_key; set both or neither"
                    .to_owned(),
            );
        }
        if let Some(key) = &self.hsm.claims_mac_key {
            if let Err(e) = label_from(key, "object") {
                return invalid(format!("hsm.claims_mac_key: {e}"));
            }
            // One key, one purpose: the MAC key is neither the keyed-hash key
            // nor the claims encryption key.
            let label = self.hsm.claims_mac_key_label();
            if label == Some(self.hsm.hashing_key_label())
                || label == Some(self.hsm.claims_key_label())
            {
                return invalid(
                    "hsm.claims_mac_key must name a key of its own, not hsm.hashing_key or hsm.claims_key"
                        .to_owned(),
                );
            }
        }
        if self.hsm.operation_timeout_ms == 0 || self.hsm.operation_timeout_ms > 600_000 {
            return invalid("hsm.operation_timeout_ms must be 1..=600000".to_owned());
        }
        let sources = [
            self.hsm.pin_file.is_some(),
            self.hsm.pin_credential.is_some(),
            self.hsm.pin_env.is_some(),
        ];
        if sources.iter().filter(|s| **s).count() != 1 {
            return invalid(
                "set exactly one of hsm.pin_file, hsm.pin_credential, hsm.pin_env".to_owned(),
            );
        }
        let url = &self.database.url;
        if !(url.starts_with("sqlite:")
            || url.starts_with("postgres://")
            || url.starts_with("postgresql://"))
        {
            return invalid("database.url must be sqlite:PATH or postgres://...".to_owned());
        }
        Ok(())
    }

    /// The trusted wallet providers' keys, read from their JWKS file.
    pub fn trusted_wallet_providers(&self) -> Result<TrustedProviders, ConfigError> {
        let Some(file) = &self.client_attestation.trusted_keys_file else {
            return Ok(TrustedProviders::default());
        };
        let path = self.resolve(file);
        let text = std::fs::read_to_string(&path).map_err(|e| {
            ConfigError::Invalid(format!(
                "client_attestation.trusted_keys_file {}: {e}",
                path.display()
            ))
        })?;
        let jwks: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| ConfigError::Invalid(format!("{} is not JSON: {e}", path.display())))?;
        TrustedProviders::from_jwks(&jwks)
            .map_err(|e| ConfigError::Invalid(format!("{}: {e}", path.display())))
    }

    /// Reads the HSM user PIN from its configured source.
    pub fn hsm_pin(&self) -> Result<HsmPin, ConfigError> {
        let raw = if let Some(file) = &self.hsm.pin_file {
            let path = self.resolve(file);
            check_private(&path)?;
            std::fs::read_to_string(&path)
                .map_err(|e| ConfigError::Pin(format!("{}: {e}", path.display())))?
        } else if let Some(name) = &self.hsm.pin_credential {
            let dir = std::env::var_os("CREDENTIALS_DIRECTORY").ok_or_else(|| {
                ConfigError::Pin(format!(
                    "hsm.pin_credential = {name:?} but $CREDENTIALS_DIRECTORY is not set (LoadCredential= in the unit)"
                ))
            })?;
            let path = Path::new(&dir).join(name);
            std::fs::read_to_string(&path)
                .map_err(|e| ConfigError::Pin(format!("{}: {e}", path.display())))?
        } else if let Some(var) = &self.hsm.pin_env {
            std::env::var(var)
                .map_err(|_| ConfigError::Pin(format!("environment variable {var} is not set")))?
        } else {
            return Err(ConfigError::Pin("no PIN source configured".to_owned()));
        };
        let pin = HsmPin::new(raw);
        let trimmed = pin.expose().trim_end_matches(['\r', '\n']);
        if trimmed.is_empty() {
            return Err(ConfigError::Pin("the PIN source is empty".to_owned()));
        }
        Ok(HsmPin::new(trimmed.to_owned()))
    }
}

/// A PIN file must not be readable or writable by group or others.
fn check_private(path: &Path) -> Result<(), ConfigError> {
    use std::os::unix::fs::PermissionsExt as _;
    let meta = std::fs::metadata(path)
        .map_err(|e| ConfigError::Pin(format!("{}: {e}", path.display())))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(ConfigError::Pin(format!(
            "{} has mode {mode:o}; it must be 0600 or stricter (chmod 600)",
            path.display()
        )));
    }
    Ok(())
}

/// The fully commented reference configuration (`notary config print-default`).
pub const REFERENCE: &str = include_str!("../config/notary.reference.toml");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reference_config_is_valid() {
        let mut config: Config = toml::from_str(REFERENCE).unwrap();
        config.base_dir = PathBuf::from("/etc/notary");
        config.validate().unwrap();
        assert_eq!(config.hsm.pin_credential.as_deref(), Some("notary-hsm-pin"));
        assert_eq!(config.audit_origin(), "notary.example.org/notary-audit");
    }

    #[test]
    fn offers_kept_shorter_than_a_token_lives_are_refused() {
        let text = REFERENCE.replace("offers_secs = 604800", "offers_secs = 299");
        assert_ne!(text, REFERENCE);
        let e = Config::parse(&text, Path::new("/etc/notary/notary.toml")).unwrap_err();
        assert!(
            e.to_string().contains(
                "retention.offers_secs (299) must be at least issuance.access_token_ttl_secs (300)"
            ),
            "{e}"
        );
        let text = REFERENCE.replace("offers_secs = 604800", "offers_secs = 300");
        Config::parse(&text, Path::new("/etc/notary/notary.toml")).unwrap();
    }
}
