//! Records the store keeps: offers and API keys, with their states and roles.

use serde::Serialize;

/// Stored state of an offer. "Expired" is not stored: it is a pending offer
/// whose `expires_at` has passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OfferState {
    /// Waiting for its one redemption.
    Pending,
    /// Redeemed; the code is spent.
    Redeemed,
    /// Too many wrong PINs; locked for good.
    Locked,
    /// Revoked by an admin.
    Revoked,
}

impl OfferState {
    /// The database spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            OfferState::Pending => "pending",
            OfferState::Redeemed => "redeemed",
            OfferState::Locked => "locked",
            OfferState::Revoked => "revoked",
        }
    }

    /// Parses the database spelling.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "pending" => Some(OfferState::Pending),
            "redeemed" => Some(OfferState::Redeemed),
            "locked" => Some(OfferState::Locked),
            "revoked" => Some(OfferState::Revoked),
            _ => None,
        }
    }
}

/// What an admin filters offers by, including the derived "expired".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OfferFilter {
    /// Pending and not expired.
    Pending,
    /// Pending but past its expiry.
    Expired,
    /// A terminal stored state.
    Stored(OfferState),
}

/// An offer as stored. Holds only keyed hashes of its code and PIN.
#[derive(Debug, Clone)]
pub struct OfferRecord {
    /// Random identifier.
    pub id: String,
    /// Keyed hash of the PIN bound to the offer id, if the offer has a PIN.
    pub pin_hash: Option<Vec<u8>>,
    /// The `tx_code` object (JSON) shown to wallets.
    pub tx_code: Option<String>,
    /// `userId` given at creation.
    pub subject: Option<String>,
    /// Credential configuration ids (JSON array).
    pub credential_ids: String,
    /// The offer's claims, sealed per credential configuration with the
    /// claims key (see `issuance::claims`); `None` once deleted.
    pub claims_sealed: Option<String>,
    /// Stored state.
    pub state: OfferState,
    /// PIN attempts counted so far: wrong ones, and any still being judged
    /// (an attempt is reserved before its PIN is compared; a right PIN gives
    /// its reservation back when it redeems).
    pub attempts: u32,
    /// Wrong PINs allowed.
    pub max_attempts: u32,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds.
    pub expires_at: i64,
    /// Unix seconds.
    pub redeemed_at: Option<i64>,
    /// Unix seconds.
    pub locked_at: Option<i64>,
    /// Unix seconds.
    pub revoked_at: Option<i64>,
    /// When the token issued for it was revoked (its code came back).
    pub token_revoked_at: Option<i64>,
}

/// A new offer to insert.
#[derive(Debug, Clone)]
pub struct NewOffer {
    /// Random identifier.
    pub id: String,
    /// Keyed hash of the pre-authorized code.
    pub code_hash: [u8; 32],
    /// The PIN's stored form, if any: its verifier keyed by the code key
    /// (`issuance::hashing`).
    pub pin_hash: Option<Vec<u8>>,
    /// The `tx_code` object (JSON).
    pub tx_code: Option<String>,
    /// Subject for the token.
    pub subject: Option<String>,
    /// Credential configuration ids (JSON array).
    pub credential_ids: String,
    /// Sealed claims (see `issuance::claims`).
    pub claims_sealed: Option<String>,
    /// Wrong PINs allowed.
    pub max_attempts: u32,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds.
    pub expires_at: i64,
    /// API key id of the creator.
    pub created_by: Option<String>,
    /// Keyed hash of the offer reference, for by-reference offers.
    pub ref_hash: Option<[u8; 32]>,
}

/// What introspection needs to know of an issued token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenStatus {
    /// The offer it was issued for.
    pub offer_id: String,
    /// When it was revoked (its code was replayed), if it was.
    pub revoked_at: Option<i64>,
}

/// A PIN attempt reserved (durably counted) before its PIN is compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PinAttempt {
    /// This attempt's number, 1-based.
    pub number: u32,
    /// Attempts the offer allows.
    pub max: u32,
}

impl PinAttempt {
    /// Attempts left if this one turns out wrong.
    pub fn remaining_if_wrong(self) -> u32 {
        self.max.saturating_sub(self.number)
    }
}

/// How the write that consumes an offer accounts for its PIN attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RedemptionAttempt {
    /// The offer has no PIN: no attempt to count.
    NoPin,
    /// An earlier write reserved the attempt (offers whose PIN hash the
    /// HSM compares); the right PIN gives it back.
    Reserved,
    /// This write counts the attempt: it consumes the offer only while an
    /// attempt is left, and gives it straight back, the PIN being right.
    CountedHere,
}

/// Result of recording a wrong PIN's verdict (its attempt already counted).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WrongPinOutcome {
    /// Recorded; this many attempts remain.
    Counted {
        /// Attempts left before the lock.
        remaining: u32,
    },
    /// This attempt was the last: the offer is locked.
    LockedNow,
}

/// Role of an admin API key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Everything.
    Admin,
    /// Create and manage offers.
    Issuer,
    /// Read-only.
    Auditor,
    /// A credential issuer checking access tokens (`/introspect` only).
    Introspect,
}

impl Role {
    /// The database spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Issuer => "issuer",
            Role::Auditor => "auditor",
            Role::Introspect => "introspect",
        }
    }

    /// Parses the database spelling.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "admin" => Some(Role::Admin),
            "issuer" => Some(Role::Issuer),
            "auditor" => Some(Role::Auditor),
            "introspect" => Some(Role::Introspect),
            _ => None,
        }
    }
}

/// An API key as stored (its secret only as a keyed hash, not kept here).
#[derive(Debug, Clone, Serialize)]
pub struct ApiKeyRecord {
    /// Identifier, shown in lists and audit entries.
    pub id: String,
    /// Human name.
    pub name: String,
    /// Role.
    pub role: Role,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds, if revoked.
    pub revoked_at: Option<i64>,
}

/// Lifecycle state of a signing key (either purpose).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyState {
    /// Generated, not used yet.
    Pending,
    /// Signs new tokens.
    Active,
    /// Signs nothing; stays in the JWKS until the tokens it signed expire.
    Retiring,
    /// Out of the JWKS.
    Retired,
}

impl KeyState {
    /// The database spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            KeyState::Pending => "pending",
            KeyState::Active => "active",
            KeyState::Retiring => "retiring",
            KeyState::Retired => "retired",
        }
    }

    /// Parses the database spelling.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "pending" => Some(KeyState::Pending),
            "active" => Some(KeyState::Active),
            "retiring" => Some(KeyState::Retiring),
            "retired" => Some(KeyState::Retired),
            _ => None,
        }
    }
}

/// What a signing key signs. Each purpose has its own active key and its
/// own rotation: rotating one never touches the other.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyPurpose {
    /// A Notary key: signs access tokens, published in the JWKS.
    Token,
    /// A credential key: signs credentials and status lists; may carry a
    /// certificate chain (`x5c`).
    Credential,
}

impl KeyPurpose {
    /// The database and command-line spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            KeyPurpose::Token => "token",
            KeyPurpose::Credential => "credential",
        }
    }

    /// Parses the database and command-line spelling.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "token" => Some(KeyPurpose::Token),
            "credential" => Some(KeyPurpose::Credential),
            _ => None,
        }
    }
}

impl std::str::FromStr for KeyPurpose {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        KeyPurpose::parse(s).ok_or_else(|| format!("{s:?} is neither token nor credential"))
    }
}

/// A signing key as recorded (the private key is in the HSM): a Notary key
/// (access tokens) or a credential key, as `purpose` says.
#[derive(Debug, Clone, Serialize)]
pub struct SigningKeyRecord {
    /// RFC 7638 thumbprint.
    pub kid: String,
    /// `CKA_LABEL` on the token.
    pub label: String,
    /// What the key signs.
    pub purpose: KeyPurpose,
    /// `EdDSA` or `ES256`.
    pub alg: String,
    /// The public JWK (JSON).
    pub public_jwk: String,
    /// Lifecycle state.
    pub state: KeyState,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds.
    pub activated_at: Option<i64>,
    /// Until when tokens it signed may still be live (retiring Notary keys;
    /// `None` for credential keys, whose credentials live long).
    pub verify_until: Option<i64>,
    /// Unix seconds.
    pub retired_at: Option<i64>,
    /// The certificate chain a CA issued for a credential key: base64
    /// (standard alphabet) DER certificates, leaf first.
    pub x5c: Option<Vec<String>>,
}

/// One stored audit entry.
#[derive(Debug, Clone, Serialize)]
pub struct AuditRecord {
    /// Sequence number, from 1, without gaps.
    pub seq: i64,
    /// Unix seconds.
    pub at: i64,
    /// Event name.
    pub event: String,
    /// What the event is about.
    pub subject: Option<String>,
    /// JSON object, as stored.
    pub details: String,
    /// Hash of the previous entry.
    #[serde(serialize_with = "hex")]
    pub prev_hash: Vec<u8>,
    /// This entry's hash.
    #[serde(serialize_with = "hex")]
    pub hash: Vec<u8>,
}

/// A signed checkpoint of the audit chain.
#[derive(Debug, Clone, Serialize)]
pub struct CheckpointRecord {
    /// Number of entries covered (the head's `seq`).
    pub size: i64,
    /// The head entry's hash.
    #[serde(serialize_with = "hex")]
    pub head_hash: Vec<u8>,
    /// The signed note, as written.
    pub note: String,
    /// Unix seconds.
    pub created_at: i64,
}

fn hex<S: serde::Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&bytes.iter().map(|b| format!("{b:02x}")).collect::<String>())
}

/// One credential issued (one per proven holder key), as recorded: facts
/// for auditors and status management, never the credential's content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IssuedCredential {
    /// Random identifier.
    pub id: String,
    /// `dc+sd-jwt` or `jwt_vc_json`.
    pub format: String,
    /// `kid` of the credential key that signed it.
    pub kid: String,
    /// RFC 7638 thumbprint of the holder key it is bound to.
    pub holder_jkt: String,
    /// SHA-256 of the credential as issued, hex.
    pub sha256: String,
    /// Unix seconds.
    pub issued_at: i64,
    /// Unix seconds.
    pub expires_at: i64,
    /// Its place in a status list (list id, index), when status lists are on.
    pub status: Option<(String, i64)>,
}

/// The issuance of one credential configuration of an offer: recorded once.
#[derive(Debug, Clone)]
pub struct NewIssuance {
    /// The offer.
    pub offer_id: String,
    /// The credential configuration issued.
    pub configuration_id: String,
    /// `jti` of the access token the request presented; it must still be
    /// the offer's token, unrevoked, when the issuance is written.
    pub token_jti: String,
    /// Sent to the wallet, which names it in notifications.
    pub notification_id: String,
    /// The credentials, one per holder key.
    pub credentials: Vec<IssuedCredential>,
    /// Replay keys of the nonces the key proofs carry: each is spent with
    /// the issuance, and one spent before refuses it.
    pub spent_nonces: Vec<ReplayKey>,
}

/// A proof's or nonce's replay key, remembered (by every instance) until
/// `keep_until`, unix seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplayKey {
    /// SHA-256 of what must not be accepted twice.
    pub key: [u8; 32],
    /// When it may be forgotten.
    pub keep_until: i64,
}

/// What became of recording an issuance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IssueOutcome {
    /// Recorded now: the credentials may be handed out.
    Issued,
    /// This configuration of the offer was issued before (by any instance).
    AlreadyIssued,
    /// The token is no longer the offer's live token (revoked, or the offer
    /// is gone).
    TokenRevoked,
    /// An SD-JWT VC holder key is bound to another credential already (a
    /// concurrent request got there first).
    HolderKeyUsed,
    /// A nonce of the proofs was spent before (by any instance).
    NonceUsed,
}

impl IssueOutcome {
    /// Whether the writes made while recording must be rolled back: the
    /// outcomes found only after something was written.
    pub fn undoes_its_writes(self) -> bool {
        matches!(self, IssueOutcome::HolderKeyUsed | IssueOutcome::NonceUsed)
    }
}

/// A recorded issuance, as a notification finds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuanceRecord {
    /// The offer.
    pub offer_id: String,
    /// The configuration issued.
    pub configuration_id: String,
    /// The access token it was issued to.
    pub token_jti: String,
}

/// Most notifications recorded per issuance.
pub const MAX_NOTIFICATIONS: i64 = 5;

/// What became of recording a wallet's notification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotificationOutcome {
    /// Recorded, with its audit entry, for this issuance.
    Recorded(IssuanceRecord),
    /// No issuance to this token has this notification id.
    Unknown,
    /// This issuance has had [`MAX_NOTIFICATIONS`] already.
    TooMany,
}

/// A credential's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CredentialStatus {
    /// Valid.
    Valid,
    /// Suspended: may be reinstated.
    Suspended,
    /// Revoked: final.
    Revoked,
}

impl CredentialStatus {
    /// The database spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            CredentialStatus::Valid => "valid",
            CredentialStatus::Suspended => "suspended",
            CredentialStatus::Revoked => "revoked",
        }
    }

    /// Parses the database spelling.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "valid" => Some(CredentialStatus::Valid),
            "suspended" => Some(CredentialStatus::Suspended),
            "revoked" => Some(CredentialStatus::Revoked),
            _ => None,
        }
    }
}

/// The two kinds of status list: the IETF Token Status List (SD-JWT VC)
/// and the W3C Bitstring Status List (`jwt_vc_json`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StatusListKind {
    /// IETF Token Status List, 2 bits per entry.
    Token,
    /// W3C Bitstring Status List, a revocation and a suspension list.
    Bitstring,
}

impl StatusListKind {
    /// The database spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            StatusListKind::Token => "token",
            StatusListKind::Bitstring => "bitstring",
        }
    }

    /// Parses the database spelling.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "token" => Some(StatusListKind::Token),
            "bitstring" => Some(StatusListKind::Bitstring),
            _ => None,
        }
    }

    /// The first letter of its lists' ids.
    pub fn prefix(self) -> &'static str {
        match self {
            StatusListKind::Token => "t",
            StatusListKind::Bitstring => "w",
        }
    }
}

/// A reserved place in a status list: the list and the counter value the
/// list's permutation turns into an index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusSlot {
    /// The list.
    pub list_id: String,
    /// The counter value (0-based).
    pub n: i64,
}

/// A credential as the admin API shows it: metadata and status only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CredentialRecord {
    /// Identifier.
    pub id: String,
    /// The offer it was issued for.
    pub offer_id: String,
    /// The offer's subject (`userId`), if it had one.
    pub subject: Option<String>,
    /// Credential configuration id.
    pub configuration: String,
    /// Format.
    pub format: String,
    /// `kid` of the credential key that signed it.
    pub kid: String,
    /// Holder key thumbprint.
    pub holder_jkt: String,
    /// SHA-256 of the credential, hex.
    pub sha256: String,
    /// Status.
    pub status: CredentialStatus,
    /// Its status list and index, when status lists were on.
    pub status_list: Option<String>,
    /// Index in the list.
    pub status_index: Option<i64>,
    /// Unix seconds.
    pub issued_at: i64,
    /// Unix seconds.
    pub expires_at: i64,
    /// Unix seconds of the last status change.
    pub status_changed_at: Option<i64>,
}

/// What became of a status change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StatusChange {
    /// Changed now (the list's version was bumped, the change audited).
    Changed(CredentialRecord),
    /// It already had that status; nothing written.
    Unchanged(CredentialRecord),
    /// Not allowed from its current status (revoked is final; only a
    /// suspended credential is reinstated).
    Refused(CredentialStatus),
    /// No such credential.
    NotFound,
}

/// A list to (re)sign, with the statuses that are not `valid`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusListContent {
    /// The list.
    pub id: String,
    /// Its kind.
    pub kind: StatusListKind,
    /// Entries.
    pub size: i64,
    /// The version these statuses are.
    pub version: i64,
    /// (index, status) of every credential not valid.
    pub changed: Vec<(i64, CredentialStatus)>,
}

/// A signed list as served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedStatusList {
    /// The list's URI id (`t1`, `w1r`, `w1s`).
    pub uri_id: String,
    /// The list.
    pub list_id: String,
    /// The version it shows.
    pub version: i64,
    /// The signed JWT.
    pub token: String,
    /// Unix seconds.
    pub signed_at: i64,
    /// Unix seconds.
    pub expires_at: i64,
}
