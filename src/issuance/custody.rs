//! The custody report: the evidence an auditor needs about every key, read
//! from the token now, with each signing key's signatures according to the
//! audit log.

use serde::Serialize;
use sha2::{Digest, Sha256};

use super::keys::{KeyError, hex, internal, role_of};
use super::{Notary, now};
use crate::hsm::capabilities::Sealing;
use crate::hsm::{Custody, KeyRole, TokenIdentity};
use crate::store::{KeyPurpose, KeyState};
use crate::x509::{CertificateFacts, leaf_facts};

/// One key in a custody report.
#[derive(Debug, Clone, Serialize)]
pub struct KeyEvidence {
    /// What the key is for: `signing` (Notary key: access tokens),
    /// `credential`, `audit`, `hashing` or `claims`.
    pub role: KeyRole,
    /// JWK thumbprint (signing and credential keys).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kid: Option<String>,
    /// `EdDSA`, `ES256`, `HMAC-SHA256` or `AES-256-GCM`.
    pub algorithm: String,
    /// Lifecycle state (signing and credential keys).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<KeyState>,
    /// SHA-256 of the raw public key, hex (asymmetric keys).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub public_key_sha256: Option<String>,
    /// Attributes as read from the token.
    pub custody: Custody,
    /// Signatures made with the key according to the audit log (tokens for
    /// Notary keys, credentials for credential keys, checkpoints for the
    /// audit key).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signatures: Option<i64>,
    /// The leaf of the certificate chain attached to a credential key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub certificate: Option<CertificateFacts>,
}

/// The evidence an auditor needs about key custody.
#[derive(Debug, Clone, Serialize)]
pub struct CustodyReport {
    /// RFC 3339.
    pub generated_at: String,
    /// The token the keys are on.
    pub token: TokenIdentity,
    /// One entry per key: Notary keys, credential keys, then the audit,
    /// hashing and claims keys.
    pub keys: Vec<KeyEvidence>,
}

impl Notary {
    /// Reads the custody evidence of every key from the token.
    pub async fn custody_report(&self) -> Result<CustodyReport, KeyError> {
        let mut records = self.store.list_signing_keys().await.map_err(internal)?;
        // Notary keys first, then credential keys, each oldest first.
        records.sort_by_key(|r| r.purpose == KeyPurpose::Credential);
        let counts = self.store.signature_counts().await.map_err(internal)?;
        let checkpoints = self.store.list_checkpoints().await.map_err(internal)?.len();
        let mut keys = Vec::new();
        for record in &records {
            let role = role_of(record.purpose);
            let custody = self
                .hsm
                .custody(role, Some(&record.label))
                .await
                .map_err(internal)?;
            let public = self
                .hsm
                .signing_key(&record.label)
                .await
                .map_err(internal)?;
            keys.push(KeyEvidence {
                role,
                kid: Some(record.kid.clone()),
                algorithm: record.alg.clone(),
                state: Some(record.state),
                public_key_sha256: Some(hex(&Sha256::digest(public.public_key.raw_bytes()))),
                custody,
                signatures: Some(
                    counts
                        .iter()
                        .find(|(kid, _)| *kid == record.kid)
                        .map_or(0, |(_, n)| *n),
                ),
                certificate: record.x5c.as_deref().and_then(leaf_facts),
            });
        }
        let audit_public = self.hsm.audit_public_key().await.map_err(internal)?;
        keys.push(KeyEvidence {
            role: KeyRole::Audit,
            kid: None,
            algorithm: audit_public.algorithm().as_str().to_owned(),
            state: None,
            public_key_sha256: Some(hex(&Sha256::digest(audit_public.raw_bytes()))),
            custody: self
                .hsm
                .custody(KeyRole::Audit, None)
                .await
                .map_err(internal)?,
            signatures: Some(i64::try_from(checkpoints).unwrap_or(i64::MAX)),
            certificate: None,
        });
        let mut secret_keys = vec![(KeyRole::Hashing, "HMAC-SHA256")];
        match self.hsm.sealing() {
            Sealing::AesGcm => secret_keys.push((KeyRole::Claims, "AES-256-GCM")),
            Sealing::AesCbcHmac => secret_keys.extend([
                (KeyRole::Claims, "AES-256-CBC"),
                (KeyRole::ClaimsMac, "HMAC-SHA256"),
            ]),
            Sealing::AesCtrHmac => secret_keys.extend([
                (KeyRole::Claims, "AES-256-CTR (keystream by CKM_AES_ECB)"),
                (KeyRole::ClaimsMac, "HMAC-SHA256"),
            ]),
        }
        for (role, algorithm) in secret_keys {
            keys.push(KeyEvidence {
                role,
                kid: None,
                algorithm: algorithm.to_owned(),
                state: None,
                public_key_sha256: None,
                custody: self.hsm.custody(role, None).await.map_err(internal)?,
                signatures: None,
                certificate: None,
            });
        }
        Ok(CustodyReport {
            generated_at: super::rfc3339(now()),
            token: self.hsm.token().clone(),
            keys,
        })
    }
}
