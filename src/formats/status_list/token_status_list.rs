//! The IETF Token Status List (draft-ietf-oauth-status-list): what SD-JWT VC
//! reference in their `status` claim.
//!
//! The list is the packed byte array of [`StatusBits`] (index 0 in the
//! least significant bits of byte 0), compressed with DEFLATE in the ZLIB
//! format (RFC 1950) and base64url-encoded without padding as `lst`. The
//! Status List Token is a JWT of `typ` [`TYP`] whose `sub` is the list's
//! URI, the value credentials carry in `status.status_list.uri`.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};

use super::{StatusBits, unzlib, zlib};
use crate::formats::{FormatError, IssuerKey, Unsigned, check_validity};
use crate::jose::b64url;

/// The Status List Token's JWS `typ`.
pub const TYP: &str = "statuslist+jwt";

/// The media type the Status List Token is served with.
pub const MEDIA_TYPE: &str = "application/statuslist+jwt";

/// Status type 0x00: the credential is valid.
pub const VALID: u8 = 0;

/// Status type 0x01: the credential is revoked; final.
pub const INVALID: u8 = 1;

/// Status type 0x02: the credential is suspended; reversible. Needs lists
/// of at least 2 bits.
pub const SUSPENDED: u8 = 2;

/// The `status_list` member, `{"bits": n, "lst": "<b64url(zlib(bytes))>"}`.
pub fn status_list_member(bits: &StatusBits) -> Result<Value, FormatError> {
    let compressed = zlib(bits.as_bytes())?;
    Ok(json!({"bits": bits.bits(), "lst": b64url(&compressed)}))
}

/// The Status List Token, unsigned: header `alg`, `typ` [`TYP`], `kid` and
/// `x5c` when the key has a chain; payload `sub` (the list's URI, which
/// credentials reference), `iat`, `exp`, `ttl` (seconds a relying party
/// may cache the token) and `status_list`. Refuses `exp <= iat` and a
/// `ttl` that is not positive.
pub fn prepare(
    list_uri: &str,
    bits: &StatusBits,
    iat: i64,
    exp: i64,
    ttl: i64,
    key: &IssuerKey,
) -> Result<Unsigned, FormatError> {
    check_validity(iat, exp)?;
    if ttl <= 0 {
        return Err(FormatError::StatusList("ttl must be positive"));
    }
    let payload = json!({
        "sub": list_uri,
        "iat": iat,
        "exp": exp,
        "ttl": ttl,
        "status_list": status_list_member(bits)?,
    });
    Ok(Unsigned {
        header: key.header(TYP, key.kid.to_owned())?,
        payload,
    })
}

/// The `status` claim a credential carries:
/// `{"status_list": {"idx": idx, "uri": list_uri}}`.
pub fn reference(list_uri: &str, idx: usize) -> Value {
    json!({"status_list": {"idx": idx, "uri": list_uri}})
}

/// Reads a `status_list` member back: `bits` must be 1, 2, 4 or 8 and `lst`
/// unpadded base64url of one ZLIB stream with a valid checksum, inflating
/// to at most [`super::MAX_LIST_BYTES`]. Other members (such as
/// `aggregation_uri`) are ignored. The list holds as many statuses as its
/// bytes do: the draft does not send the number of tokens.
pub fn decode(member: &Value) -> Result<StatusBits, FormatError> {
    let bits = member
        .get("bits")
        .and_then(Value::as_u64)
        .and_then(|bits| u8::try_from(bits).ok())
        .ok_or(FormatError::StatusList(
            "bits is missing or not 1, 2, 4 or 8",
        ))?;
    let lst = member
        .get("lst")
        .and_then(Value::as_str)
        .ok_or(FormatError::StatusList("lst is missing or not a string"))?;
    let compressed = URL_SAFE_NO_PAD
        .decode(lst)
        .map_err(|_| FormatError::StatusList("lst is not unpadded base64url"))?;
    StatusBits::from_bytes(bits, unzlib(&compressed)?)
}

#[cfg(test)]
mod tests;
