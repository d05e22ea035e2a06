//! A W3C Verifiable Credential (VC Data Model 1.1) as a JWT: the OID4VCI 1.0
//! format `jwt_vc_json` (Appendix A.1.1), in the VC-JWT encoding of VCDM 1.1,
//! where the credential sits in the `vc` claim and the registered JWT
//! claims repeat its issuer, subject, identifier and dates.
//!
//! This is the shape dataspace wallets (Gaia-X, Eclipse Dataspace
//! Components) take: issuer and holder are DIDs, the header's `kid` is a
//! DID URL resolving to the issuer key in the issuer's DID document (see
//! [`super::did`]), and the credential is not selectively disclosable.
//! The document is not processed as JSON-LD here; `@context` is written
//! because VCDM 1.1 requires it.

use serde_json::{Map, Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::{FormatError, IssuerKey, Unsigned, check_validity};

/// The OID4VCI format identifier.
pub const FORMAT: &str = "jwt_vc_json";

/// The base type every credential has; always first in `vc.type`.
pub const BASE_TYPE: &str = "VerifiableCredential";

/// The VCDM 1.1 base context; always first in `vc.@context`.
pub const BASE_CONTEXT: &str = "https://www.w3.org/2018/credentials/v1";

/// What a credential says, about whom, and under which identifier.
#[derive(Debug, Clone, Copy)]
pub struct Input<'a> {
    /// The issuer's DID (e.g. from [`super::did::did_web`]); becomes `iss`
    /// and `vc.issuer`, and prefixes the header's `kid`.
    pub issuer_did: &'a str,
    /// The holder's DID (e.g. the `did:jwk` of the proof key); becomes `sub`
    /// and `vc.credentialSubject.id`, binding the credential to the wallet.
    pub holder_did: &'a str,
    /// The configuration's credential types. [`BASE_TYPE`] is put first and
    /// added when missing; repeats are dropped.
    pub types: &'a [String],
    /// `@context` entries after [`BASE_CONTEXT`]; repeats are dropped.
    pub contexts: &'a [String],
    /// The offer's claims, put into `credentialSubject` as given. `id` and
    /// JSON-LD keywords (`@...`) are refused (see [`prepare`]).
    pub claims: &'a Map<String, Value>,
    /// The credential's identifier (`urn:uuid:...`); becomes `jti` and `vc.id`.
    pub credential_id: &'a str,
    /// Issued at (Unix seconds); also `nbf` and `issuanceDate`.
    pub iat: i64,
    /// Expires at (Unix seconds); must be after `iat`.
    pub exp: i64,
    /// `vc.credentialStatus` (e.g. a `BitstringStatusListEntry`) when present.
    pub status: Option<&'a Value>,
}

/// Builds the unsigned VC-JWT. Refuses a claim named `id` (the subject's
/// identifier is the holder's DID, never something an offer says) and any
/// claim starting with `@` (a JSON-LD keyword would change how the subject
/// is read instead of adding a claim); the error names the claim only.
pub fn prepare(input: &Input, key: &IssuerKey) -> Result<Unsigned, FormatError> {
    check_validity(input.iat, input.exp)?;
    if let Some(name) = input
        .claims
        .keys()
        .find(|name| *name == "id" || name.starts_with('@'))
    {
        return Err(FormatError::ReservedClaim(name.clone()));
    }

    let mut subject = Map::new();
    subject.insert("id".into(), input.holder_did.into());
    for (name, value) in input.claims {
        subject.insert(name.clone(), value.clone());
    }

    let mut vc = Map::new();
    vc.insert(
        "@context".into(),
        base_first(BASE_CONTEXT, input.contexts).into(),
    );
    vc.insert("type".into(), base_first(BASE_TYPE, input.types).into());
    vc.insert("id".into(), input.credential_id.into());
    vc.insert("issuer".into(), input.issuer_did.into());
    vc.insert("issuanceDate".into(), rfc3339(input.iat)?.into());
    vc.insert("expirationDate".into(), rfc3339(input.exp)?.into());
    vc.insert("credentialSubject".into(), Value::Object(subject));
    if let Some(status) = input.status {
        vc.insert("credentialStatus".into(), status.clone());
    }

    let payload = json!({
        "iss": input.issuer_did,
        "sub": input.holder_did,
        "nbf": input.iat,
        "iat": input.iat,
        "exp": input.exp,
        "jti": input.credential_id,
        "vc": vc,
    });
    let kid = format!("{}#{}", input.issuer_did, key.kid);
    Ok(Unsigned {
        header: key.header("JWT", kid)?,
        payload,
    })
}

/// `base` followed by `rest` in order, each entry once.
fn base_first(base: &str, rest: &[String]) -> Vec<String> {
    let mut list = vec![base.to_owned()];
    for entry in rest {
        if !list.contains(entry) {
            list.push(entry.clone());
        }
    }
    list
}

/// A Unix time as an RFC 3339 UTC date with whole seconds
/// (`2023-11-14T22:13:20Z`), as VCDM 1.1 and 2.0 dates are written.
pub(super) fn rfc3339(unix: i64) -> Result<String, FormatError> {
    OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .ok_or(FormatError::Time)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::formats::test_support::{TestKey, jws_parts};
    use crate::jose::{Algorithm, compact};

    const ISSUER: &str = "did:web:notary.example";
    const HOLDER: &str = "did:jwk:eyJrdHkiOiJPS1AifQ";
    const CREDENTIAL_ID: &str = "urn:uuid:8a4d6a4e-2f0b-4c6e-9d57-1f7a3b2c9e10";

    fn claims() -> Map<String, Value> {
        json!({"memberOf": "Dataspace-Secret", "legalName": "ACME-Secret GmbH"})
            .as_object()
            .unwrap()
            .clone()
    }

    fn strings(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    fn input<'a>(claims: &'a Map<String, Value>, types: &'a [String]) -> Input<'a> {
        Input {
            issuer_did: ISSUER,
            holder_did: HOLDER,
            types,
            contexts: &[],
            claims,
            credential_id: CREDENTIAL_ID,
            iat: 1_700_000_000,
            exp: 1_731_536_000,
            status: None,
        }
    }

    fn key(x5c: Option<&[String]>) -> IssuerKey<'_> {
        IssuerKey {
            alg: Algorithm::ES256,
            kid: "key-1",
            x5c,
        }
    }

    #[test]
    fn a_signed_credential_verifies_and_has_the_vcdm_1_1_shape() {
        let signer = TestKey::new();
        let claims = claims();
        let types = strings(&["MembershipCredential"]);
        let contexts = strings(&[BASE_CONTEXT, "https://w3id.org/dataspace/v1"]);
        let status =
            json!({"id": "https://notary.example/status/1#7", "type": "BitstringStatusListEntry"});
        let input = Input {
            contexts: &contexts,
            status: Some(&status),
            ..input(&claims, &types)
        };
        let unsigned = prepare(&input, &key(None)).unwrap();
        let signing_input = unsigned.signing_input();
        let jwt = compact(signing_input.clone(), &signer.sign(&signing_input));

        let verified = signer.verify(&jwt).unwrap();
        let (header, _) = jws_parts(&jwt);
        assert_eq!(
            header,
            json!({"alg": "ES256", "typ": "JWT", "kid": "did:web:notary.example#key-1"})
        );
        assert_eq!(verified["iss"], ISSUER);
        assert_eq!(verified["sub"], HOLDER);
        assert_eq!(verified["jti"], CREDENTIAL_ID);
        assert_eq!(verified["nbf"], 1_700_000_000);
        assert_eq!(verified["iat"], 1_700_000_000);
        assert_eq!(verified["exp"], 1_731_536_000);

        let vc = &verified["vc"];
        assert_eq!(
            vc["@context"],
            json!([BASE_CONTEXT, "https://w3id.org/dataspace/v1"])
        );
        assert_eq!(
            vc["type"],
            json!(["VerifiableCredential", "MembershipCredential"])
        );
        assert_eq!(vc["id"], CREDENTIAL_ID);
        assert_eq!(vc["issuer"], ISSUER);
        assert_eq!(vc["issuanceDate"], "2023-11-14T22:13:20Z");
        assert_eq!(vc["expirationDate"], "2024-11-13T22:13:20Z");
        for date in ["issuanceDate", "expirationDate"] {
            let text = vc[date].as_str().unwrap();
            let parsed = OffsetDateTime::parse(text, &Rfc3339).unwrap();
            assert_eq!(parsed.offset(), time::UtcOffset::UTC);
        }
        assert_eq!(vc["credentialStatus"], status);
        let mut subject = claims.clone();
        subject.insert("id".into(), HOLDER.into());
        assert_eq!(vc["credentialSubject"], Value::Object(subject));
    }

    #[test]
    fn verifiable_credential_comes_first_once_whatever_the_configuration_says() {
        let claims = claims();
        for types in [
            strings(&[]),
            strings(&["MembershipCredential"]),
            strings(&["MembershipCredential", "VerifiableCredential"]),
            strings(&[
                "VerifiableCredential",
                "MembershipCredential",
                "MembershipCredential",
            ]),
        ] {
            let unsigned = prepare(&input(&claims, &types), &key(None)).unwrap();
            let listed = &unsigned.payload["vc"]["type"];
            let expected = if types.is_empty() {
                json!(["VerifiableCredential"])
            } else {
                json!(["VerifiableCredential", "MembershipCredential"])
            };
            assert_eq!(listed, &expected);
            assert_eq!(unsigned.payload["vc"]["@context"], json!([BASE_CONTEXT]));
        }
    }

    #[test]
    fn x5c_is_in_the_header_only_when_given() {
        let claims = claims();
        let chain = strings(&["TUlJQg=="]);
        let with = prepare(&input(&claims, &[]), &key(Some(&chain))).unwrap();
        assert_eq!(with.header["x5c"], json!(chain));
        let without = prepare(&input(&claims, &[]), &key(None)).unwrap();
        assert!(without.header.get("x5c").is_none());
    }

    #[test]
    fn an_id_or_json_ld_keyword_claim_is_refused_by_name_without_its_value() {
        for name in ["id", "@context", "@id"] {
            let mut claims = claims();
            claims.insert(name.into(), json!("did:example:Forged-Value-1"));
            let error = prepare(&input(&claims, &[]), &key(None)).unwrap_err();
            assert_eq!(error, FormatError::ReservedClaim(name.into()));
            assert!(!error.to_string().contains("Forged"));
        }
        let mut claims = claims();
        claims.insert("type".into(), json!("Organization"));
        assert!(
            prepare(&input(&claims, &[]), &key(None)).is_ok(),
            "type is a claim"
        );
    }

    #[test]
    fn a_backwards_lifetime_or_an_unwritable_date_is_refused() {
        let claims = claims();
        let backwards = Input {
            exp: 1_700_000_000,
            ..input(&claims, &[])
        };
        assert_eq!(prepare(&backwards, &key(None)), Err(FormatError::Validity));
        // Year 11 000: a valid i64, not an RFC 3339 date.
        let far = Input {
            exp: 285_000_000_000,
            ..input(&claims, &[])
        };
        assert_eq!(prepare(&far, &key(None)), Err(FormatError::Time));
    }
}
