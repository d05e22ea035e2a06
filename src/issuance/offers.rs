//! Creating, reading, listing and revoking credential offers.

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::{InternalError, Notary, claims, hashing, now, random, rfc3339};
use crate::audit::AuditEvent;
use crate::oid4vci::offer::{CredentialOffer, Grants, InputMode, PreAuthorizedGrant, TxCodeSpec};
use crate::secret::{OfferReference, PreAuthorizedCode, TxCode};
use crate::store::{NewOffer, OfferFilter, OfferRecord, OfferState, RevokeOutcome};

/// `transactionCode` in a create request: `true`, `false`, or a `tx_code` object.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum TransactionCodeRequest {
    /// `true`: a numeric PIN of the default length; `false`: no PIN.
    Flag(bool),
    /// A PIN shaped as described.
    Spec {
        /// Length (4..=12); default from config.
        length: Option<u32>,
        /// `numeric` (default) or `text`.
        input_mode: Option<InputMode>,
        /// Shown by the wallet (at most 300 characters).
        description: Option<String>,
    },
}

impl Default for TransactionCodeRequest {
    /// A PIN unless the caller opts out: an offer link alone is a bearer
    /// credential, and a PIN sent over a second channel limits a leaked link.
    fn default() -> Self {
        TransactionCodeRequest::Flag(true)
    }
}

/// `POST /v1/openid/offers/pre-authorized` body (shape of the seed offer API).
/// Its `Debug` shows which configurations have claims, never the claims.
#[derive(Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateOffer {
    /// Credential configuration ids.
    pub credentials: Vec<String>,
    /// Subject for the token.
    pub user_id: Option<String>,
    /// Offer lifetime, seconds.
    pub expires_in: Option<u64>,
    /// Whether and how to require a PIN.
    #[serde(default)]
    pub transaction_code: TransactionCodeRequest,
    /// Offer by reference (`credential_offer_uri`).
    #[serde(default)]
    pub by_reference: bool,
    /// Per credential configuration id, the claims of the credential to
    /// issue. Checked against the configuration, then stored only sealed.
    pub claims: Option<serde_json::Map<String, serde_json::Value>>,
}

impl std::fmt::Debug for CreateOffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let claims: Option<Vec<&String>> = self.claims.as_ref().map(|m| m.keys().collect());
        f.debug_struct("CreateOffer")
            .field("credentials", &self.credentials)
            .field("user_id", &self.user_id)
            .field("expires_in", &self.expires_in)
            .field("transaction_code", &self.transaction_code)
            .field("by_reference", &self.by_reference)
            .field("claims_for", &claims)
            .finish()
    }
}

/// The 201 response: the only time the code (inside `uri`) and PIN exist
/// outside the holder's hands.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CreatedOffer {
    /// Offer id.
    pub id: String,
    /// The subject, if given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    /// The `openid-credential-offer://` deep link.
    pub uri: Zeroizing<String>,
    /// RFC 3339.
    pub expires_at: String,
    /// The PIN, as a string (it may start with 0).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub transaction_code: Option<Zeroizing<String>>,
}

/// An offer as the admin API shows it: state and timestamps, never a secret.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OfferView {
    /// Offer id.
    pub id: String,
    /// Subject.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    /// Credential configuration ids.
    pub credentials: serde_json::Value,
    /// pending, redeemed, expired, locked or revoked.
    pub state: &'static str,
    /// Whether a PIN is required.
    pub transaction_code_required: bool,
    /// The credential configurations the offer still holds sealed claims
    /// for (never the claims: they are read back only to issue).
    pub claims: Vec<String>,
    /// Wrong PINs so far.
    pub attempts: u32,
    /// Wrong PINs allowed.
    pub max_attempts: u32,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339.
    pub expires_at: String,
    /// RFC 3339.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redeemed_at: Option<String>,
    /// RFC 3339.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub locked_at: Option<String>,
    /// RFC 3339.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<String>,
}

impl OfferView {
    fn from_record(r: OfferRecord, now: i64) -> Self {
        let state = match r.state {
            OfferState::Pending if now >= r.expires_at => "expired",
            s => s.as_str(),
        };
        OfferView {
            state,
            transaction_code_required: r.pin_hash.is_some(),
            claims: r
                .claims_sealed
                .as_deref()
                .map(claims::configurations)
                .unwrap_or_default(),
            credentials: serde_json::from_str(&r.credential_ids).unwrap_or_default(),
            attempts: r.attempts,
            max_attempts: r.max_attempts,
            created_at: rfc3339(r.created_at),
            expires_at: rfc3339(r.expires_at),
            redeemed_at: r.redeemed_at.map(rfc3339),
            locked_at: r.locked_at.map(rfc3339),
            revoked_at: r.revoked_at.map(rfc3339),
            user_id: r.subject,
            id: r.id,
        }
    }
}

/// Why an offer request was refused.
#[derive(Debug, thiserror::Error)]
pub enum OfferError {
    /// The request is wrong; the message says how.
    #[error("{0}")]
    Invalid(String),
    /// No such offer.
    #[error("no offer with this id")]
    NotFound,
    /// The offer is no longer pending.
    #[error("the offer is already {0}")]
    NotPending(&'static str),
    /// Internal failure.
    #[error(transparent)]
    Internal(#[from] InternalError),
}

/// When notary issues the credentials, an offer must be one it can issue:
/// claims for every configuration that has mandatory ones, and no claim a
/// format sets itself. As the authorization server alone it takes no claims:
/// nothing would ever read them, and personal data is not kept for nothing.
fn check_issuable(
    policy: &super::Policy,
    offered: &[String],
    claims: Option<&serde_json::Map<String, serde_json::Value>>,
) -> Result<(), OfferError> {
    if !policy.serves_credentials {
        return match claims {
            Some(_) => Err(OfferError::Invalid(
                "claims are taken only when notary issues the credentials; \
                 this server is the authorization server of another credential issuer"
                    .to_owned(),
            )),
            None => Ok(()),
        };
    }
    for configuration in offered {
        let given = claims
            .and_then(|c| c.get(configuration))
            .and_then(serde_json::Value::as_object);
        match given {
            None => {
                let mandatory = policy
                    .declared_claims
                    .get(configuration)
                    .and_then(Option::as_ref)
                    .and_then(|d| d.mandatory.iter().next());
                if let Some(claim) = mandatory {
                    return Err(crate::oid4vci::claims::ClaimsError::Missing {
                        configuration: configuration.chars().take(64).collect(),
                        claim: claim.chars().take(64).collect(),
                    }
                    .into());
                }
            }
            Some(given) => {
                let reserved = policy
                    .credential_profiles
                    .get(configuration)
                    .and_then(|p| Some((p.format.as_str(), p.reserved_claim(given)?)));
                if let Some((format, claim)) = reserved {
                    return Err(OfferError::Invalid(format!(
                        "claims.{} has the claim {:?}, which a {format} credential sets itself",
                        configuration.chars().take(64).collect::<String>(),
                        claim.chars().take(64).collect::<String>()
                    )));
                }
            }
        }
    }
    Ok(())
}

impl From<crate::hsm::HsmError> for OfferError {
    fn from(e: crate::hsm::HsmError) -> Self {
        OfferError::Internal(e.into())
    }
}
impl From<crate::store::StoreError> for OfferError {
    fn from(e: crate::store::StoreError) -> Self {
        OfferError::Internal(e.into())
    }
}
impl From<crate::oid4vci::claims::ClaimsError> for OfferError {
    fn from(e: crate::oid4vci::claims::ClaimsError) -> Self {
        OfferError::Invalid(e.to_string())
    }
}
impl From<random::RandomError> for OfferError {
    fn from(e: random::RandomError) -> Self {
        OfferError::Internal(e.into())
    }
}

/// A by-reference offer as fetched by a wallet or shown on the offer page.
#[derive(Debug)]
pub struct OfferByReference {
    /// The Credential Offer JSON (it holds the code: wiped on drop).
    pub offer_json: Zeroizing<String>,
    /// The `openid-credential-offer://?credential_offer_uri=...` link.
    pub deep_link: String,
    /// RFC 3339.
    pub expires_at: String,
    /// What the wallet shows before asking for the PIN (never the PIN).
    pub tx_code: Option<TxCodeSpec>,
    /// The credential configuration ids offered.
    pub credentials: Vec<String>,
}

/// Path under which by-reference offers are served.
pub const OFFER_REFERENCE_PATH: &str = "/oid4vci/credential-offer/";

/// The deep link of a by-reference offer.
fn offer_reference_uri(public_url: &str, reference: &OfferReference) -> String {
    let url = format!("{public_url}{OFFER_REFERENCE_PATH}{}", reference.expose());
    let encoded: String = form_urlencoded::byte_serialize(url.as_bytes()).collect();
    format!("openid-credential-offer://?credential_offer_uri={encoded}")
}

/// Longest `userId`, description or claims document accepted.
const MAX_SUBJECT: usize = 256;
const MAX_DESCRIPTION: usize = 300;
const MAX_CLAIMS_BYTES: usize = 8 * 1024;

impl Notary {
    /// Creates an offer; `created_by` is the API key id (or `cli`).
    pub async fn create_offer(
        &self,
        request: CreateOffer,
        created_by: &str,
    ) -> Result<CreatedOffer, OfferError> {
        let policy = &self.policy;
        if request.credentials.is_empty() {
            return Err(OfferError::Invalid(
                "credentials must name at least one credential configuration".into(),
            ));
        }
        if let Some(unknown) = request
            .credentials
            .iter()
            .find(|c| !policy.known_credentials.contains(*c))
        {
            return Err(OfferError::Invalid(format!(
                "unknown credential configuration {unknown:?}; known: {:?}",
                policy.known_credentials
            )));
        }
        if let Some(subject) = &request.user_id {
            if subject.is_empty() || subject.len() > MAX_SUBJECT {
                return Err(OfferError::Invalid(format!(
                    "userId must be 1..={MAX_SUBJECT} characters"
                )));
            }
        }
        let ttl = request.expires_in.unwrap_or(policy.default_offer_ttl);
        if ttl == 0 || ttl > policy.max_offer_ttl {
            return Err(OfferError::Invalid(format!(
                "expiresIn must be 1..={} seconds",
                policy.max_offer_ttl
            )));
        }
        let tx_code = self.tx_code_spec(&request.transaction_code)?;
        if let Some(map) = &request.claims {
            // Measured without a copy of the claims: the serialised length.
            let mut counter = ByteCounter(0);
            let _ = serde_json::to_writer(&mut counter, map);
            if counter.0 > MAX_CLAIMS_BYTES {
                return Err(OfferError::Invalid(format!(
                    "claims must be at most {MAX_CLAIMS_BYTES} bytes of JSON"
                )));
            }
            crate::oid4vci::claims::check(map, &request.credentials, &policy.declared_claims)?;
        }
        check_issuable(policy, &request.credentials, request.claims.as_ref())?;

        let id = random::token(16)?;
        // Sealed before anything is stored, bound to this offer's id.
        let claims_sealed = match &request.claims {
            Some(map) => claims::seal(&self.hsm, &id, map).await?,
            None => None,
        };
        // By reference, the code is derived from the URL's reference in the
        // HSM, so a later GET can rebuild the offer without storing the code.
        let reference = match request.by_reference {
            true => Some(OfferReference::new(random::token(32)?)),
            false => None,
        };
        let code = match &reference {
            Some(reference) => hashing::code_from_reference(&self.hsm, reference).await?,
            None => PreAuthorizedCode::new(random::token(32)?),
        };
        let ref_hash = match &reference {
            Some(reference) => Some(hashing::offer_ref_hash(&self.hsm, reference).await?),
            None => None,
        };
        let pin = match &tx_code {
            Some(spec) => Some(random::pin(spec.length, spec.input_mode)?),
            None => None,
        };
        let code_key = hashing::code_key(&self.hsm, &code).await?;
        let code_hash = code_key.lookup();
        let pin_hash = pin
            .as_ref()
            .map(|pin| code_key.pin_verifier(&id, &TxCode::new(pin.to_string())));
        drop(code_key);
        let created_at = now();
        let expires_at = created_at.saturating_add(i64::try_from(ttl).unwrap_or(i64::MAX));
        let credential_ids = serde_json::to_string(&request.credentials).unwrap_or_default();
        let record = NewOffer {
            id: id.clone(),
            code_hash,
            pin_hash,
            tx_code: tx_code.as_ref().and_then(|t| serde_json::to_string(t).ok()),
            subject: request.user_id.clone(),
            credential_ids,
            claims_sealed,
            max_attempts: policy.max_tx_code_attempts,
            created_at,
            expires_at,
            created_by: Some(created_by.to_owned()),
            ref_hash,
        };
        let event = AuditEvent::new(
            "offer.created",
            &id,
            serde_json::json!({
                "by": created_by,
                "credentials": request.credentials,
                "tx_code": tx_code.is_some(),
                "by_reference": request.by_reference,
                "expires_at": expires_at,
            }),
        );
        self.store.insert_offer(&record, event).await?;

        let uri = match &reference {
            Some(reference) => offer_reference_uri(&policy.public_url, reference),
            None => self
                .credential_offer(&request.credentials, &code, tx_code.as_ref())
                .to_uri(),
        };
        Ok(CreatedOffer {
            id,
            user_id: request.user_id,
            uri: Zeroizing::new(uri),
            expires_at: rfc3339(expires_at),
            transaction_code: pin,
        })
    }

    /// The Credential Offer document for an offer's code.
    fn credential_offer<'a>(
        &'a self,
        credentials: &'a [String],
        code: &'a PreAuthorizedCode,
        tx_code: Option<&'a TxCodeSpec>,
    ) -> CredentialOffer<'a> {
        let policy = &self.policy;
        let authorization_server =
            (policy.credential_issuer != policy.public_url).then_some(policy.public_url.as_str());
        CredentialOffer {
            credential_issuer: &policy.credential_issuer,
            credential_configuration_ids: credentials,
            grants: Grants {
                pre_authorized_code: PreAuthorizedGrant {
                    code: code.expose(),
                    tx_code,
                    authorization_server,
                },
            },
        }
    }

    /// The offer behind a by-reference URL, while it can still be redeemed.
    /// A redeemed, expired, locked, revoked or unknown offer is `None`: the
    /// caller answers 404 for all of them alike.
    pub async fn offer_by_reference(
        &self,
        reference: &OfferReference,
    ) -> Result<Option<OfferByReference>, InternalError> {
        // References are 43 base64url characters; anything else cannot match.
        let r = reference.expose();
        if r.len() != 43
            || !r
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Ok(None);
        }
        let ref_hash = hashing::offer_ref_hash(&self.hsm, reference).await?;
        let Some(record) = self.store.find_offer_by_ref_hash(&ref_hash).await? else {
            return Ok(None);
        };
        if record.state != OfferState::Pending || now() >= record.expires_at {
            return Ok(None);
        }
        let code = hashing::code_from_reference(&self.hsm, reference).await?;
        let credentials: Vec<String> =
            serde_json::from_str(&record.credential_ids).unwrap_or_default();
        let tx_code: Option<TxCodeSpec> = record
            .tx_code
            .as_deref()
            .and_then(|t| serde_json::from_str(t).ok());
        let document = self.credential_offer(&credentials, &code, tx_code.as_ref());
        let offer_json = Zeroizing::new(serde_json::to_string(&document).unwrap_or_default());
        Ok(Some(OfferByReference {
            offer_json,
            deep_link: offer_reference_uri(&self.policy.public_url, reference),
            expires_at: rfc3339(record.expires_at),
            tx_code,
            credentials,
        }))
    }

    fn tx_code_spec(
        &self,
        request: &TransactionCodeRequest,
    ) -> Result<Option<TxCodeSpec>, OfferError> {
        let (length, input_mode, description) = match request {
            TransactionCodeRequest::Flag(false) => return Ok(None),
            TransactionCodeRequest::Flag(true) => (None, None, None),
            TransactionCodeRequest::Spec {
                length,
                input_mode,
                description,
            } => (*length, *input_mode, description.clone()),
        };
        let length = length.unwrap_or(self.policy.tx_code_length);
        if !(4..=12).contains(&length) {
            return Err(OfferError::Invalid(
                "transactionCode.length must be 4..=12".into(),
            ));
        }
        if description
            .as_ref()
            .is_some_and(|d| d.chars().count() > MAX_DESCRIPTION)
        {
            return Err(OfferError::Invalid(format!(
                "transactionCode.description must be at most {MAX_DESCRIPTION} characters"
            )));
        }
        Ok(Some(TxCodeSpec {
            length,
            input_mode: input_mode.unwrap_or(InputMode::Numeric),
            description,
        }))
    }

    /// One offer's state.
    pub async fn get_offer(&self, id: &str) -> Result<OfferView, OfferError> {
        let record = self
            .store
            .get_offer(id)
            .await?
            .ok_or(OfferError::NotFound)?;
        Ok(OfferView::from_record(record, now()))
    }

    /// A page of offers, newest first.
    pub async fn list_offers(
        &self,
        filter: Option<OfferFilter>,
        limit: u32,
        cursor: Option<&str>,
    ) -> Result<(Vec<OfferView>, Option<String>), OfferError> {
        let now = now();
        let page = match self.store.list_offers(filter, now, limit, cursor).await {
            Err(crate::store::StoreError::BadCursor) => {
                return Err(OfferError::Invalid(
                    "cursor must be a nextCursor value returned by this endpoint".into(),
                ));
            }
            other => other?,
        };
        let views = page
            .offers
            .into_iter()
            .map(|r| OfferView::from_record(r, now))
            .collect();
        Ok((views, page.next_cursor))
    }

    /// Revokes a pending offer.
    pub async fn revoke_offer(&self, id: &str, by: &str) -> Result<OfferView, OfferError> {
        match self.store.revoke_offer(id, now(), by).await? {
            RevokeOutcome::Revoked => self.get_offer(id).await,
            RevokeOutcome::NotFound => Err(OfferError::NotFound),
            RevokeOutcome::NotPending(state) => Err(OfferError::NotPending(state.as_str())),
        }
    }
}

/// Counts the bytes written to it and keeps none.
struct ByteCounter(usize);

impl std::io::Write for ByteCounter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 = self.0.saturating_add(buf.len());
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Parses the `state` filter of the list endpoint.
pub fn parse_filter(state: &str) -> Option<OfferFilter> {
    match state {
        "pending" => Some(OfferFilter::Pending),
        "expired" => Some(OfferFilter::Expired),
        other => OfferState::parse(other).map(OfferFilter::Stored),
    }
}
