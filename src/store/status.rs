//! Credential status on both backends: reserving places in status lists,
//! changing a credential's status (with its audit entry and the list's
//! version bump, in one transaction), and the signed lists as served.
//!
//! The SQL is the same on both backends but for placeholders, so each
//! statement is written once with `?` and numbered for PostgreSQL.

use sqlx::Row;

use super::{
    CredentialRecord, CredentialStatus, PgStore, SignedStatusList, SqliteStore, StatusChange,
    StatusListContent, StatusListKind, StatusSlot, StoreError,
};
use crate::audit::AuditEvent;

/// `?` placeholders as `$1, $2, ...` for PostgreSQL.
pub(super) fn numbered(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len() + 8);
    let mut n = 0;
    for c in sql.chars() {
        if c == '?' {
            n += 1;
            out.push('$');
            out.push_str(&n.to_string());
        } else {
            out.push(c);
        }
    }
    out
}

const CREDENTIAL_COLUMNS: &str = "id, offer_id, subject, configuration_id, format, kid, holder_jkt, \
     sha256, status, status_list, status_index, issued_at, expires_at, status_changed_at";

/// The status a change leads to, or why it cannot happen.
fn transition(
    from: CredentialStatus,
    to: CredentialStatus,
) -> Result<Option<CredentialStatus>, CredentialStatus> {
    use CredentialStatus::{Revoked, Suspended, Valid};
    match (from, to) {
        (a, b) if a == b => Ok(None),
        (Revoked, _) => Err(Revoked),
        (Valid, Revoked) | (Suspended, Revoked) | (Valid, Suspended) | (Suspended, Valid) => {
            Ok(Some(to))
        }
        (Valid, Valid) | (Suspended, Suspended) => Ok(None),
    }
}

fn status_event(record: &CredentialRecord, from: CredentialStatus, by: &str) -> AuditEvent {
    AuditEvent::new(
        "credential.status_changed",
        &record.id,
        serde_json::json!({
            "from": from.as_str(),
            "to": record.status.as_str(),
            "by": by,
            "offer_id": record.offer_id,
            "status_list": record.status_list,
            "status_index": record.status_index,
        }),
    )
}

macro_rules! status_methods {
    ($store:ty, $row:ty, $sql:expr, $append:path) => {
        impl $store {
            fn credential_from_row(row: &$row) -> Result<CredentialRecord, StoreError> {
                let status: String = row.try_get("status")?;
                Ok(CredentialRecord {
                    id: row.try_get("id")?,
                    offer_id: row.try_get("offer_id")?,
                    subject: row.try_get("subject")?,
                    configuration: row.try_get("configuration_id")?,
                    format: row.try_get("format")?,
                    kid: row.try_get("kid")?,
                    holder_jkt: row.try_get("holder_jkt")?,
                    sha256: row.try_get("sha256")?,
                    status: CredentialStatus::parse(&status).ok_or_else(|| {
                        StoreError::Internal(format!("unknown credential status {status:?}"))
                    })?,
                    status_list: row.try_get("status_list")?,
                    status_index: row.try_get("status_index")?,
                    issued_at: row.try_get("issued_at")?,
                    expires_at: row.try_get("expires_at")?,
                    status_changed_at: row.try_get("status_changed_at")?,
                })
            }

            pub(super) async fn credential(
                &self,
                id: &str,
            ) -> Result<Option<CredentialRecord>, StoreError> {
                let sql = $sql(&format!("SELECT {CREDENTIAL_COLUMNS} FROM credentials WHERE id = ?"));
                let row = sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(id)
                    .fetch_optional(&self.pool)
                    .await?;
                row.as_ref().map(Self::credential_from_row).transpose()
            }

            pub(super) async fn list_credentials(
                &self,
                offer_id: Option<&str>,
                subject: Option<&str>,
                limit: i64,
            ) -> Result<Vec<CredentialRecord>, StoreError> {
                let sql = $sql(&format!(
                    "SELECT {CREDENTIAL_COLUMNS} FROM credentials \
                     WHERE (CAST(? AS TEXT) IS NULL OR offer_id = ?) \
                     AND (CAST(? AS TEXT) IS NULL OR subject = ?) \
                     ORDER BY issued_at DESC, id LIMIT ?"
                ));
                let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(offer_id)
                    .bind(offer_id)
                    .bind(subject)
                    .bind(subject)
                    .bind(limit)
                    .fetch_all(&self.pool)
                    .await?;
                rows.iter().map(Self::credential_from_row).collect()
            }

            pub(super) async fn change_status(
                &self,
                id: &str,
                to: CredentialStatus,
                by: &str,
                now: i64,
            ) -> Result<StatusChange, StoreError> {
                let mut tx = self.begin_write().await?;
                let sql = $sql(&format!("SELECT {CREDENTIAL_COLUMNS} FROM credentials WHERE id = ?"));
                let row = sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(id)
                    .fetch_optional(&mut *tx)
                    .await?;
                let Some(mut record) = row.as_ref().map(Self::credential_from_row).transpose()?
                else {
                    tx.commit().await?;
                    return Ok(StatusChange::NotFound);
                };
                let from = record.status;
                let next = match transition(from, to) {
                    Ok(Some(next)) => next,
                    Ok(None) => {
                        tx.commit().await?;
                        return Ok(StatusChange::Unchanged(record));
                    }
                    Err(current) => {
                        tx.commit().await?;
                        return Ok(StatusChange::Refused(current));
                    }
                };
                sqlx::query(sqlx::AssertSqlSafe($sql(
                    "UPDATE credentials SET status = ?, status_changed_at = ? WHERE id = ? AND status = ?",
                )))
                .bind(next.as_str())
                .bind(now)
                .bind(id)
                .bind(from.as_str())
                .execute(&mut *tx)
                .await?;
                if let Some(list) = &record.status_list {
                    sqlx::query(sqlx::AssertSqlSafe($sql(
                        "UPDATE status_lists SET version = version + 1 WHERE id = ?",
                    )))
                    .bind(list)
                    .execute(&mut *tx)
                    .await?;
                }
                record.status = next;
                record.status_changed_at = Some(now);
                let event = status_event(&record, from, by);
                $append(&mut tx, &event, now).await?;
                tx.commit().await?;
                Ok(StatusChange::Changed(record))
            }

            pub(super) async fn status_lists_to_sign(
                &self,
                renew_before: i64,
            ) -> Result<Vec<StatusListContent>, StoreError> {
                let rows = sqlx::query(
                    "SELECT l.id, l.kind, l.size, l.version, \
                     COUNT(s.uri_id) AS signed, MIN(s.version) AS signed_version, \
                     MIN(s.expires_at) AS signed_until \
                     FROM status_lists l LEFT JOIN signed_status_lists s ON s.list_id = l.id \
                     GROUP BY l.id, l.kind, l.size, l.version",
                )
                .fetch_all(&self.pool)
                .await?;
                let mut due = Vec::new();
                for row in &rows {
                    let kind: String = row.try_get("kind")?;
                    let kind = StatusListKind::parse(&kind).ok_or_else(|| {
                        StoreError::Internal(format!("unknown status list kind {kind:?}"))
                    })?;
                    let version: i64 = row.try_get("version")?;
                    let signed: i64 = row.try_get("signed")?;
                    let signed_version: Option<i64> = row.try_get("signed_version")?;
                    let signed_until: Option<i64> = row.try_get("signed_until")?;
                    let uris = match kind {
                        StatusListKind::Token => 1,
                        StatusListKind::Bitstring => 2,
                    };
                    let fresh = signed >= uris
                        && signed_version.is_some_and(|v| v >= version)
                        && signed_until.is_some_and(|u| u > renew_before);
                    if fresh {
                        continue;
                    }
                    let id: String = row.try_get("id")?;
                    // The version is read before the statuses: statuses
                    // newer than it are shown early, never missed.
                    let changed = sqlx::query(sqlx::AssertSqlSafe($sql(
                        "SELECT status_index, status FROM credentials \
                         WHERE status_list = ? AND status <> 'valid'",
                    )))
                    .bind(&id)
                    .fetch_all(&self.pool)
                    .await?
                    .iter()
                    .map(|r| {
                        let status: String = r.try_get("status")?;
                        Ok((
                            r.try_get::<i64, _>("status_index")?,
                            CredentialStatus::parse(&status).unwrap_or(CredentialStatus::Revoked),
                        ))
                    })
                    .collect::<Result<Vec<_>, StoreError>>()?;
                    due.push(StatusListContent {
                        id,
                        kind,
                        size: row.try_get("size")?,
                        version,
                        changed,
                    });
                }
                Ok(due)
            }

            pub(super) async fn save_signed_status_list(
                &self,
                list: &SignedStatusList,
            ) -> Result<bool, StoreError> {
                // A write transaction, so that it takes its turn with the
                // process's other writers.
                let mut tx = self.begin_write().await?;
                let saved = sqlx::query(sqlx::AssertSqlSafe($sql(
                    "INSERT INTO signed_status_lists (uri_id, list_id, version, token, signed_at, expires_at) \
                     VALUES (?, ?, ?, ?, ?, ?) \
                     ON CONFLICT (uri_id) DO UPDATE SET version = excluded.version, token = excluded.token, \
                     signed_at = excluded.signed_at, expires_at = excluded.expires_at \
                     WHERE signed_status_lists.version <= excluded.version",
                )))
                .bind(&list.uri_id)
                .bind(&list.list_id)
                .bind(list.version)
                .bind(&list.token)
                .bind(list.signed_at)
                .bind(list.expires_at)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                tx.commit().await?;
                Ok(saved == 1)
            }

            pub(super) async fn signed_status_list(
                &self,
                uri_id: &str,
            ) -> Result<Option<SignedStatusList>, StoreError> {
                let row = sqlx::query(sqlx::AssertSqlSafe($sql(
                    "SELECT uri_id, list_id, version, token, signed_at, expires_at \
                     FROM signed_status_lists WHERE uri_id = ?",
                )))
                .bind(uri_id)
                .fetch_optional(&self.pool)
                .await?;
                row.map(|r| {
                    Ok(SignedStatusList {
                        uri_id: r.try_get("uri_id")?,
                        list_id: r.try_get("list_id")?,
                        version: r.try_get("version")?,
                        token: r.try_get("token")?,
                        signed_at: r.try_get("signed_at")?,
                        expires_at: r.try_get("expires_at")?,
                    })
                })
                .transpose()
            }
        }
    };
}

/// SQL as written, for SQLite.
pub(super) fn same(sql: &str) -> String {
    sql.to_owned()
}

status_methods!(
    SqliteStore,
    sqlx::sqlite::SqliteRow,
    same,
    super::sqlite::append_audit
);
status_methods!(
    PgStore,
    sqlx::postgres::PgRow,
    numbered,
    super::postgres::append_audit
);

/// SQLite reserves places in its group commit (`direct.rs`).
impl PgStore {
    /// `reserve_status_slots` inside the caller's write transaction.
    ///
    /// Safe for writers on several instances without the writer lock: the
    /// places come from one conditional `UPDATE ... RETURNING` on the list's
    /// row, which PostgreSQL re-checks against the committed row, so two
    /// transactions can never be handed the same places. A list is opened
    /// with `ON CONFLICT DO NOTHING`, so two instances opening the next
    /// list at once open one, and both then take places in it.
    pub(super) async fn reserve_status_slots_in(
        tx: &mut sqlx::PgConnection,
        kind: StatusListKind,
        count: i64,
        size: i64,
        now: i64,
    ) -> Result<Vec<StatusSlot>, StoreError> {
        // Each pass either takes places or opens a list; a list is opened
        // only when the newest is full, so a few passes always suffice.
        for _ in 0..4 {
            let taken: Option<(String, i64)> = sqlx::query_as(
                "UPDATE status_lists SET allocated = allocated + $2 \
                 WHERE id = (SELECT id FROM status_lists WHERE kind = $1 AND allocated + $2 <= size \
                             ORDER BY created_at DESC, id DESC LIMIT 1 FOR UPDATE) \
                   AND allocated + $2 <= size \
                 RETURNING id, allocated - $2",
            )
            .bind(kind.as_str())
            .bind(count)
            .fetch_optional(&mut *tx)
            .await?;
            if let Some((list_id, first)) = taken {
                return Ok((first..first + count)
                    .map(|n| StatusSlot {
                        list_id: list_id.clone(),
                        n,
                    })
                    .collect());
            }
            // The newest list is full (or filled while we waited for it):
            // open the next one, unless another writer just did.
            let lists: i64 =
                sqlx::query_scalar("SELECT COUNT(*) FROM status_lists WHERE kind = $1")
                    .bind(kind.as_str())
                    .fetch_one(&mut *tx)
                    .await?;
            sqlx::query(
                "INSERT INTO status_lists (id, kind, size, created_at) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (id) DO NOTHING",
            )
            .bind(format!("{}{}", kind.prefix(), lists + 1))
            .bind(kind.as_str())
            .bind(size)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        Err(StoreError::Unavailable(
            "no status list place could be reserved: the lists keep filling".to_owned(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_numbered_for_postgres() {
        assert_eq!(
            numbered("a = ? AND b = ? OR c = ?"),
            "a = $1 AND b = $2 OR c = $3"
        );
    }

    #[test]
    fn revoked_is_final_and_only_a_suspension_is_lifted() {
        use CredentialStatus::{Revoked, Suspended, Valid};
        assert_eq!(transition(Valid, Suspended), Ok(Some(Suspended)));
        assert_eq!(transition(Suspended, Valid), Ok(Some(Valid)));
        assert_eq!(transition(Suspended, Revoked), Ok(Some(Revoked)));
        assert_eq!(transition(Valid, Valid), Ok(None));
        assert_eq!(transition(Revoked, Revoked), Ok(None));
        assert_eq!(transition(Revoked, Valid), Err(Revoked));
        assert_eq!(transition(Revoked, Suspended), Err(Revoked));
    }
}
