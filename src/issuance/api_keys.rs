//! Admin API keys: created with a secret shown once, stored as a keyed hash.

use super::{InternalError, Notary, hashing, now, random};
use crate::secret::ApiKeySecret;
use crate::store::{ApiKeyRecord, Role};

/// A key just created: the only moment its secret exists outside the holder.
#[derive(Debug)]
pub struct CreatedApiKey {
    /// The stored record.
    pub record: ApiKeyRecord,
    /// The secret to hand to its holder, once.
    pub secret: ApiKeySecret,
}

/// Prefix that makes notary keys recognisable to secret scanners.
const KEY_PREFIX: &str = "notary_";

impl Notary {
    /// Creates an API key with `role`.
    pub async fn create_api_key(
        &self,
        role: Role,
        name: &str,
    ) -> Result<CreatedApiKey, InternalError> {
        let secret = ApiKeySecret::new(format!("{KEY_PREFIX}{}", random::token(32)?));
        let hash = hashing::api_key_hash(&self.hsm, &secret).await?;
        let record = ApiKeyRecord {
            id: format!("key_{}", random::token(9)?),
            name: name.to_owned(),
            role,
            created_at: now(),
            revoked_at: None,
        };
        self.store.insert_api_key(&record, &hash).await?;
        Ok(CreatedApiKey { record, secret })
    }

    /// The active key matching `secret`, if any.
    pub async fn authenticate(
        &self,
        secret: &ApiKeySecret,
    ) -> Result<Option<ApiKeyRecord>, InternalError> {
        // Keys of the wrong shape cannot match; skip the HSM round trip.
        if !secret.expose().starts_with(KEY_PREFIX) || secret.expose().len() > 128 {
            return Ok(None);
        }
        let hash = hashing::api_key_hash(&self.hsm, secret).await?;
        Ok(self.store.find_api_key(&hash).await?)
    }

    /// All keys, revoked ones included.
    pub async fn list_api_keys(&self) -> Result<Vec<ApiKeyRecord>, InternalError> {
        Ok(self.store.list_api_keys().await?)
    }

    /// Revokes a key; false when no active key has this id.
    pub async fn revoke_api_key(&self, id: &str) -> Result<bool, InternalError> {
        Ok(self.store.revoke_api_key(id, now()).await?)
    }
}
