//! Turning rows into records, written once for both backends: the column
//! names and types are the same in `migrations/sqlite` and
//! `migrations/postgres`; only the row type differs.

/// Defines `offer_from_row`, `api_key_from_row`, `signing_key_from_row`
/// and `audit_from_row` for a backend's row type.
macro_rules! row_mappers {
    ($row:ty) => {
        pub(super) fn offer_from_row(row: &$row) -> Result<OfferRecord, StoreError> {
            let state: String = row.try_get("state")?;
            let attempts: i64 = row.try_get("attempts")?;
            let max_attempts: i64 = row.try_get("max_attempts")?;
            Ok(OfferRecord {
                id: row.try_get("id")?,
                pin_hash: row.try_get("pin_hash")?,
                tx_code: row.try_get("tx_code")?,
                subject: row.try_get("subject")?,
                credential_ids: row.try_get("credential_ids")?,
                claims_sealed: row.try_get("claims_sealed")?,
                state: OfferState::parse(&state).ok_or_else(|| {
                    StoreError::Internal(format!("unknown offer state {state:?}"))
                })?,
                attempts: u32::try_from(attempts).unwrap_or(u32::MAX),
                max_attempts: u32::try_from(max_attempts).unwrap_or(0),
                created_at: row.try_get("created_at")?,
                expires_at: row.try_get("expires_at")?,
                redeemed_at: row.try_get("redeemed_at")?,
                locked_at: row.try_get("locked_at")?,
                revoked_at: row.try_get("revoked_at")?,
                token_revoked_at: row.try_get("token_revoked_at")?,
            })
        }

        pub(super) fn api_key_from_row(row: &$row) -> Result<ApiKeyRecord, StoreError> {
            let role: String = row.try_get("role")?;
            Ok(ApiKeyRecord {
                id: row.try_get("id")?,
                name: row.try_get("name")?,
                role: Role::parse(&role)
                    .ok_or_else(|| StoreError::Internal(format!("unknown role {role:?}")))?,
                created_at: row.try_get("created_at")?,
                revoked_at: row.try_get("revoked_at")?,
            })
        }

        pub(super) fn signing_key_from_row(row: &$row) -> Result<SigningKeyRecord, StoreError> {
            let state: String = row.try_get("state")?;
            let purpose: String = row.try_get("purpose")?;
            let x5c: Option<String> = row.try_get("x5c")?;
            let x5c = x5c
                .map(|chain| {
                    serde_json::from_str::<Vec<String>>(&chain).map_err(|e| {
                        StoreError::Internal(format!("a stored x5c is not a JSON array: {e}"))
                    })
                })
                .transpose()?;
            Ok(SigningKeyRecord {
                kid: row.try_get("kid")?,
                label: row.try_get("label")?,
                purpose: KeyPurpose::parse(&purpose).ok_or_else(|| {
                    StoreError::Internal(format!("unknown key purpose {purpose:?}"))
                })?,
                alg: row.try_get("alg")?,
                public_jwk: row.try_get("public_jwk")?,
                state: KeyState::parse(&state)
                    .ok_or_else(|| StoreError::Internal(format!("unknown key state {state:?}")))?,
                created_at: row.try_get("created_at")?,
                activated_at: row.try_get("activated_at")?,
                verify_until: row.try_get("verify_until")?,
                retired_at: row.try_get("retired_at")?,
                x5c,
            })
        }

        pub(super) fn audit_from_row(row: &$row) -> Result<AuditRecord, StoreError> {
            Ok(AuditRecord {
                seq: row.try_get("seq")?,
                at: row.try_get("at")?,
                event: row.try_get("event")?,
                subject: row.try_get("subject")?,
                details: row.try_get("details")?,
                prev_hash: row.try_get("prev_hash")?,
                hash: row.try_get("hash")?,
            })
        }
    };
}

pub(super) use row_mappers;

/// The stored form of a certificate chain: a JSON array of base64 DER
/// certificates, leaf first.
pub(super) fn x5c_json(x5c: &[String]) -> Result<String, super::StoreError> {
    serde_json::to_string(x5c)
        .map_err(|e| super::StoreError::Internal(format!("encoding a certificate chain: {e}")))
}

/// Parses a paging cursor (`created_at.id`) issued by `list_offers`.
pub(super) fn parse_cursor(cursor: &str) -> Option<(i64, String)> {
    let (at, id) = cursor.split_once('.')?;
    Some((at.parse().ok()?, id.to_owned()))
}
