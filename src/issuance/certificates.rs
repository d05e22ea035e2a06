//! Certificates for credential keys: a PKCS#10 request signed inside the
//! HSM for the issuer's CA, and the chain the CA returns, checked against
//! the key and attached so that credentials carry it as `x5c`.

use std::sync::{Arc, Mutex};

use base64::Engine as _;
use sha2::{Digest, Sha256};

use super::keys::{KeyError, internal};
use super::{InternalError, Notary, now, rfc3339};
use crate::audit::AuditEvent;
use crate::hsm::{HsmError, SigningKeyInfo};
use crate::store::{KeyPurpose, KeyState, SigningKeyRecord};
use crate::x509::{self, CertificateFacts};

fn refused(e: x509::X509Error) -> KeyError {
    KeyError::Refused(e.to_string())
}

impl Notary {
    /// A PEM PKCS#10 request for the credential key `kid`, for the subject
    /// `subject` (RFC 4514 text, e.g. `CN=Example Issuer,O=Example
    /// University,C=NL`), self-signed inside the HSM. Audited as
    /// `key.csr_signed` (with the request's SHA-256 and subject).
    pub async fn credential_key_csr(&self, kid: &str, subject: &str) -> Result<String, KeyError> {
        let name = x509::parse_subject(subject).map_err(refused)?;
        let record = self.credential_record(kid, "a certificate request").await?;
        let key = self.token_key(&record).await?;
        let hsm = self.hsm.clone();
        let runtime = tokio::runtime::Handle::current();
        let failure: Arc<Mutex<Option<HsmError>>> = Arc::default();
        let failed = Arc::clone(&failure);
        // rcgen signs through a synchronous trait: build the request on a
        // blocking thread, where waiting for the HSM's answer blocks
        // nothing but this thread.
        let made = tokio::task::spawn_blocking(move || {
            x509::certification_request(&key.public_key, name, |message: &[u8]| {
                runtime
                    .block_on(hsm.sign_credential(&key, message.to_vec()))
                    .map_err(|e| {
                        let why = e.to_string();
                        *failed
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(e);
                        why
                    })
            })
        })
        .await
        .map_err(|e| KeyError::Internal(InternalError::Task(e.to_string())))?;
        let request = match made {
            Ok(request) => request,
            Err(e) => {
                let hsm_error = failure
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .take();
                return Err(match hsm_error {
                    Some(hsm_error) => internal(hsm_error),
                    None => refused(e),
                });
            }
        };
        let event = AuditEvent::new(
            "key.csr_signed",
            kid,
            serde_json::json!({
                "subject": subject.trim(),
                "csr_sha256": super::keys::hex(&Sha256::digest(&request.der)),
            }),
        );
        self.store.audit(event, now()).await.map_err(internal)?;
        Ok(request.pem)
    }

    /// Checks a PEM certificate chain (leaf first) for the credential key
    /// `kid` (the leaf certifies exactly its public key, each certificate is
    /// issued by the next, the leaf has not expired) and attaches it, with
    /// the audit entry `key.certificate_attached`. Running servers pick it
    /// up within `[keys] refresh_secs`. Returns the leaf's facts.
    pub async fn attach_certificate_chain(
        &self,
        kid: &str,
        pem: &[u8],
    ) -> Result<CertificateFacts, KeyError> {
        let record = self.credential_record(kid, "a certificate").await?;
        let key = self.token_key(&record).await?;
        let chain = x509::certificates_from_pem(pem).map_err(refused)?;
        let leaf = x509::check_chain(&chain, &key.public_key, now()).map_err(refused)?;
        let x5c: Vec<String> = chain
            .iter()
            .map(|der| base64::engine::general_purpose::STANDARD.encode(der))
            .collect();
        let event = AuditEvent::new(
            "key.certificate_attached",
            kid,
            serde_json::json!({
                "leaf_sha256": leaf.sha256,
                "subject": leaf.subject,
                "issuer": leaf.issuer,
                "not_after": rfc3339(leaf.not_after),
                "certificates": x5c.len(),
                "replaced": record.x5c.is_some(),
            }),
        );
        if !self
            .store
            .set_certificate_chain(kid, &x5c, event)
            .await
            .map_err(internal)?
        {
            return Err(KeyError::Refused(format!(
                "key {kid} changed state meanwhile"
            )));
        }
        Ok(leaf)
    }

    /// The record of a credential key that is not retired; `what` names
    /// what was asked for, in the refusal.
    async fn credential_record(&self, kid: &str, what: &str) -> Result<SigningKeyRecord, KeyError> {
        let record = self
            .store
            .list_signing_keys()
            .await
            .map_err(internal)?
            .into_iter()
            .find(|r| r.kid == kid)
            .ok_or_else(|| KeyError::Refused(format!("no key with kid {kid}")))?;
        if record.purpose != KeyPurpose::Credential {
            return Err(KeyError::Refused(format!(
                "key {kid} signs access tokens: {what} is only for a credential key \
                 (notary keys list shows their purpose)"
            )));
        }
        if record.state == KeyState::Retired {
            return Err(KeyError::Refused(format!("key {kid} is retired")));
        }
        Ok(record)
    }

    /// The key on the token, which must still have the recorded kid.
    async fn token_key(&self, record: &SigningKeyRecord) -> Result<SigningKeyInfo, KeyError> {
        let info = self
            .hsm
            .signing_key(&record.label)
            .await
            .map_err(internal)?;
        if info.kid != record.kid {
            return Err(KeyError::Refused(format!(
                "key {:?} on the token has kid {} but the database records {}",
                record.label, info.kid, record.kid
            )));
        }
        Ok(info)
    }
}
