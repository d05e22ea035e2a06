//! Credential issuance records, on both backends: exactly once per offer and
//! credential configuration.
//!
//! `record_issuance` is one transaction that (1) checks the presented token
//! is still the offer's live token, (2) inserts the issuance row, whose
//! primary key (offer, configuration) refuses a second one from any
//! instance, (3) spends the proofs' nonces (one spent before refuses it),
//! (4) deletes that configuration's sealed claims, (5) records each
//! credential and (6) appends their audit entries. Credentials are
//! signed before it runs and handed out only after it commits, so a crash
//! at any point either leaves no record and no credential out, or the
//! record of credentials that may have reached the wallet.

use sqlx::Row;

use super::status::{numbered, same};
use super::{
    IssuanceRecord, IssueOutcome, MAX_NOTIFICATIONS, NewIssuance, NotificationOutcome, PgStore,
    SqliteStore, StoreError,
};
use crate::audit::AuditEvent;

/// The sealed-claims column once `configuration`'s claims are removed
/// (`None` when nothing is left).
pub(super) fn without_configuration(stored: Option<String>, configuration: &str) -> Option<String> {
    let mut sealed: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(&stored?).ok()?;
    sealed.remove(configuration);
    (!sealed.is_empty()).then(|| serde_json::Value::Object(sealed).to_string())
}

/// One `credential.issued` entry per credential: configuration, format,
/// kid, holder key thumbprint and the credential's SHA-256; never a claim.
pub(super) fn issued_events(issuance: &NewIssuance) -> Vec<AuditEvent> {
    issuance
        .credentials
        .iter()
        .map(|c| {
            AuditEvent::new(
                "credential.issued",
                &issuance.offer_id,
                serde_json::json!({
                    "credential_id": c.id,
                    "configuration": issuance.configuration_id,
                    "format": c.format,
                    "kid": c.kid,
                    "holder_jkt": c.holder_jkt,
                    "sha256": c.sha256,
                    "expires_at": c.expires_at,
                    "jti": issuance.token_jti,
                    "notification_id": issuance.notification_id,
                }),
            )
        })
        .collect()
}

/// The audit entry of a wallet's notification: the event, never the
/// wallet's free-text description.
fn notification_event(record: &IssuanceRecord, notification_id: &str, event: &str) -> AuditEvent {
    AuditEvent::new(
        "credential.notification",
        &record.offer_id,
        serde_json::json!({
            "event": event,
            "configuration": record.configuration_id,
            "notification_id": notification_id,
        }),
    )
}

/// Whether `row`'s token facts make `jti` the offer's live token.
pub(super) fn token_is_live(jti: &str, token_jti: Option<String>, revoked_at: Option<i64>) -> bool {
    token_jti.as_deref() == Some(jti) && revoked_at.is_none()
}

/// The issuance methods of one backend: the SQL is written once with `?`
/// placeholders (numbered for PostgreSQL by `$sql`); `$append` appends one
/// audit entry inside the transaction.
macro_rules! issuance_methods {
    ($store:ty, $sql:expr, $append:path) => {
        impl $store {
    pub(super) async fn record_notification(
        &self,
        notification_id: &str,
        token_jti: &str,
        event: &'static str,
        now: i64,
    ) -> Result<NotificationOutcome, StoreError> {
        let mut tx = self.begin_write().await?;
        let row = sqlx::query(sqlx::AssertSqlSafe($sql("UPDATE credential_issuances SET notifications = notifications + 1 \
             WHERE notification_id = ? AND token_jti = ? AND notifications < ? \
             RETURNING offer_id, configuration_id")))
        .bind(notification_id)
        .bind(token_jti)
        .bind(MAX_NOTIFICATIONS)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            let known: Option<i64> = sqlx::query_scalar(sqlx::AssertSqlSafe($sql("SELECT CAST(1 AS BIGINT) FROM credential_issuances WHERE notification_id = ? AND token_jti = ?")))
            .bind(notification_id)
            .bind(token_jti)
            .fetch_optional(&mut *tx)
            .await?;
            tx.commit().await?;
            return Ok(match known {
                Some(_) => NotificationOutcome::TooMany,
                None => NotificationOutcome::Unknown,
            });
        };
        let record = IssuanceRecord {
            offer_id: row.try_get("offer_id")?,
            configuration_id: row.try_get("configuration_id")?,
            token_jti: token_jti.to_owned(),
        };
        let entry = notification_event(&record, notification_id, event);
        $append(&mut tx, &entry, now).await?;
        tx.commit().await?;
        Ok(NotificationOutcome::Recorded(record))
    }
}
    };
}

issuance_methods!(SqliteStore, same, super::sqlite::append_audit);
// PostgreSQL also locks the offer's row (without the writer lock, so
// instances issue at once), and the primary key refuses a second issuance.
issuance_methods!(PgStore, numbered, super::postgres::append_audit);

/// Whether an SD-JWT VC credential already binds a holder key.
const HOLDER_KEY_BOUND: &str =
    "SELECT 1 FROM credentials WHERE holder_jkt = ? AND format = 'dc+sd-jwt'";
/// Whether a proof's or nonce's replay key was recorded.
const REPLAY_KEY_SEEN: &str = "SELECT 1 FROM proof_jtis WHERE key = ?";
/// Whether a configuration of an offer was issued.
const ISSUED: &str =
    "SELECT 1 FROM credential_issuances WHERE offer_id = ? AND configuration_id = ?";

/// Both asked by every credential request before it signs: read on the
/// request's own thread (`direct.rs`).
impl SqliteStore {
    pub(super) async fn holder_key_bound(&self, holder_jkt: &str) -> Result<bool, StoreError> {
        super::direct::exists(&self.file, HOLDER_KEY_BOUND, [holder_jkt])
    }

    pub(super) async fn replay_key_seen(&self, key: &[u8; 32]) -> Result<bool, StoreError> {
        super::direct::exists(&self.file, REPLAY_KEY_SEEN, [key.as_slice()])
    }

    pub(super) async fn is_issued(
        &self,
        offer_id: &str,
        configuration_id: &str,
    ) -> Result<bool, StoreError> {
        super::direct::exists(&self.file, ISSUED, [offer_id, configuration_id])
    }
}

impl PgStore {
    pub(super) async fn replay_key_seen(&self, key: &[u8; 32]) -> Result<bool, StoreError> {
        let found: Option<i32> = sqlx::query_scalar(sqlx::AssertSqlSafe(numbered(REPLAY_KEY_SEEN)))
            .bind(key.as_slice())
            .fetch_optional(&self.pool)
            .await?;
        Ok(found.is_some())
    }

    pub(super) async fn holder_key_bound(&self, holder_jkt: &str) -> Result<bool, StoreError> {
        let found: Option<i32> =
            sqlx::query_scalar(sqlx::AssertSqlSafe(numbered(HOLDER_KEY_BOUND)))
                .bind(holder_jkt)
                .fetch_optional(&self.pool)
                .await?;
        Ok(found.is_some())
    }

    pub(super) async fn is_issued(
        &self,
        offer_id: &str,
        configuration_id: &str,
    ) -> Result<bool, StoreError> {
        let found: Option<i32> = sqlx::query_scalar(sqlx::AssertSqlSafe(numbered(ISSUED)))
            .bind(offer_id)
            .bind(configuration_id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(found.is_some())
    }
}

/// SQLite records issuances in its group commit (`direct.rs`).
impl PgStore {
    /// `record_issuance` inside the caller's write transaction. Writes
    /// nothing unless the outcome is `Issued`, except on the outcomes that
    /// [`IssueOutcome::undoes_its_writes`], after which the caller must
    /// roll back what it wrote.
    pub(super) async fn record_issuance_in(
        tx: &mut sqlx::PgConnection,
        issuance: &NewIssuance,
        now: i64,
    ) -> Result<IssueOutcome, StoreError> {
        let offer = sqlx::query(sqlx::AssertSqlSafe(numbered(
            "SELECT token_jti, token_revoked_at, claims_sealed, subject FROM offers \
             WHERE id = ? AND state = 'redeemed' FOR UPDATE",
        )))
        .bind(&issuance.offer_id)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(offer) = offer else {
            return Ok(IssueOutcome::TokenRevoked);
        };
        if !token_is_live(
            &issuance.token_jti,
            offer.try_get("token_jti")?,
            offer.try_get("token_revoked_at")?,
        ) {
            return Ok(IssueOutcome::TokenRevoked);
        }
        let inserted = sqlx::query(sqlx::AssertSqlSafe(numbered(
            "INSERT INTO credential_issuances \
             (offer_id, configuration_id, token_jti, notification_id, issued_at) \
             VALUES (?, ?, ?, ?, ?) ON CONFLICT (offer_id, configuration_id) DO NOTHING",
        )))
        .bind(&issuance.offer_id)
        .bind(&issuance.configuration_id)
        .bind(&issuance.token_jti)
        .bind(&issuance.notification_id)
        .bind(now)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if inserted == 0 {
            return Ok(IssueOutcome::AlreadyIssued);
        }
        for nonce in &issuance.spent_nonces {
            let spent = sqlx::query(
                "INSERT INTO proof_jtis (key, keep_until) VALUES ($1, $2) \
                 ON CONFLICT (key) DO NOTHING",
            )
            .bind(nonce.key.as_slice())
            .bind(nonce.keep_until)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if spent == 0 {
                return Ok(IssueOutcome::NonceUsed);
            }
        }
        let subject: Option<String> = offer.try_get("subject")?;
        let remaining =
            without_configuration(offer.try_get("claims_sealed")?, &issuance.configuration_id);
        sqlx::query(sqlx::AssertSqlSafe(numbered(
            "UPDATE offers SET claims_sealed = ? WHERE id = ?",
        )))
        .bind(remaining)
        .bind(&issuance.offer_id)
        .execute(&mut *tx)
        .await?;
        for c in &issuance.credentials {
            let inserted = sqlx::query(sqlx::AssertSqlSafe(numbered(
                "INSERT INTO credentials (id, offer_id, configuration_id, format, kid, holder_jkt, \
                 sha256, issued_at, expires_at, subject, status_list, status_index) \
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            )))
            .bind(&c.id)
            .bind(&issuance.offer_id)
            .bind(&issuance.configuration_id)
            .bind(&c.format)
            .bind(&c.kid)
            .bind(&c.holder_jkt)
            .bind(&c.sha256)
            .bind(c.issued_at)
            .bind(c.expires_at)
            .bind(&subject)
            .bind(c.status.as_ref().map(|(list, _)| list.as_str()))
            .bind(c.status.as_ref().map(|(_, index)| *index))
            .execute(&mut *tx)
            .await;
            // Only the SD-JWT holder-key index can conflict here (ids are
            // random). The caller undoes the issuance row.
            match inserted {
                Ok(_) => {}
                Err(e) => match StoreError::from(e) {
                    StoreError::Conflict(_) => return Ok(IssueOutcome::HolderKeyUsed),
                    other => return Err(other),
                },
            }
        }
        for event in issued_events(issuance) {
            super::postgres::append_audit(&mut *tx, &event, now).await?;
        }
        Ok(IssueOutcome::Issued)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issuing_one_configuration_deletes_only_its_claims() {
        let stored = Some(r#"{"A":"sealed-a","B":"sealed-b"}"#.to_owned());
        let left = without_configuration(stored, "A").unwrap();
        assert_eq!(left, r#"{"B":"sealed-b"}"#);
        assert_eq!(without_configuration(Some(left), "B"), None);
        assert_eq!(without_configuration(None, "A"), None);
    }
}
