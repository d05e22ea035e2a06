//! The claims a credential configuration declares, and checking an offer's
//! claims against them.
//!
//! Only top-level claim names are checked: the claims of a credential are
//! the members of the object an offer gives for its configuration, and a
//! nested claim (`["address", "street"]`) is part of its top-level member.
//! Errors name claims and configurations, never a claim's value: values are
//! personal data and must not reach a response, a log or the audit log.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value};

/// The claims a configuration declares: every top-level name, and those
/// that are mandatory.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeclaredClaims {
    /// Every top-level claim name the configuration declares.
    pub known: BTreeSet<String>,
    /// Names a credential of this configuration cannot be issued without.
    pub mandatory: BTreeSet<String>,
}

impl DeclaredClaims {
    /// Reads the declared claims of one `credential_configurations_supported`
    /// entry: the OID4VCI 1.0 `claims` array of `{path, mandatory}`, the
    /// earlier drafts' `claims` object (`{"name": {"mandatory": true}}`), or
    /// draft 13's `credential_definition.credentialSubject` object.
    /// `None` when the configuration declares no claims: then any claims are
    /// accepted, as nothing says what they should be.
    pub fn of(configuration: &Value) -> Option<Self> {
        let declared = match configuration.get("claims") {
            Some(Value::Array(entries)) => Some(from_paths(entries)),
            Some(Value::Object(members)) => Some(from_members(members)),
            _ => None,
        };
        declared.or_else(|| {
            configuration
                .pointer("/credential_definition/credentialSubject")
                .and_then(Value::as_object)
                .map(from_members)
        })
    }
}

/// 1.0: `[{"path": ["given_name"], "mandatory": true}, ...]`. A mandatory
/// nested claim makes its top-level member mandatory.
fn from_paths(entries: &[Value]) -> DeclaredClaims {
    let mut declared = DeclaredClaims::default();
    for entry in entries {
        let Some(name) = entry.pointer("/path/0").and_then(Value::as_str) else {
            continue;
        };
        declared.known.insert(name.to_owned());
        if entry.get("mandatory").and_then(Value::as_bool) == Some(true) {
            declared.mandatory.insert(name.to_owned());
        }
    }
    declared
}

/// Drafts: `{"given_name": {"mandatory": true, "display": [...]}, ...}`.
fn from_members(members: &Map<String, Value>) -> DeclaredClaims {
    let mut declared = DeclaredClaims::default();
    for (name, spec) in members {
        declared.known.insert(name.clone());
        if spec.get("mandatory").and_then(Value::as_bool) == Some(true) {
            declared.mandatory.insert(name.clone());
        }
    }
    declared
}

/// What is wrong with an offer's claims. Every message names a claim or a
/// configuration, never a value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClaimsError {
    /// Claims are given for a configuration the offer does not name.
    #[error("claims are given for {0:?}, which is not among the offer's credentials")]
    NotOffered(String),
    /// A configuration's claims are not a JSON object.
    #[error("claims.{0} must be an object of claims")]
    NotAnObject(String),
    /// A mandatory claim is missing.
    #[error("claims.{configuration} lacks the mandatory claim {claim:?}")]
    Missing {
        /// The credential configuration id.
        configuration: String,
        /// The claim's name.
        claim: String,
    },
    /// A claim the configuration does not declare.
    #[error(
        "claims.{configuration} has the claim {claim:?}, which the configuration does not declare"
    )]
    Unknown {
        /// The credential configuration id.
        configuration: String,
        /// The claim's name.
        claim: String,
    },
}

/// Longest claim or configuration name quoted in an error; longer ones are
/// cut, so a caller cannot make an error message (or a log line) large.
const MAX_QUOTED: usize = 64;

fn quoted(name: &str) -> String {
    name.chars().take(MAX_QUOTED).collect()
}

/// Checks an offer's `claims` (configuration id → object of claims) against
/// what its `offered` configurations declare (`declared`: configuration id →
/// declared claims, `None` when it declares none). Configurations offered
/// without claims are not checked here: an issuer that sources claims
/// elsewhere (notary as authorization server only) needs none.
pub fn check(
    claims: &Map<String, Value>,
    offered: &[String],
    declared: &BTreeMap<String, Option<DeclaredClaims>>,
) -> Result<(), ClaimsError> {
    for (configuration, given) in claims {
        if !offered.contains(configuration) {
            return Err(ClaimsError::NotOffered(quoted(configuration)));
        }
        let Value::Object(given) = given else {
            return Err(ClaimsError::NotAnObject(quoted(configuration)));
        };
        let Some(Some(rules)) = declared.get(configuration) else {
            continue;
        };
        if let Some(claim) = rules.mandatory.iter().find(|m| !given.contains_key(*m)) {
            return Err(ClaimsError::Missing {
                configuration: quoted(configuration),
                claim: quoted(claim),
            });
        }
        if let Some(claim) = given.keys().find(|k| !rules.known.contains(*k)) {
            return Err(ClaimsError::Unknown {
                configuration: quoted(configuration),
                claim: quoted(claim),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn declared(configuration: Value) -> BTreeMap<String, Option<DeclaredClaims>> {
        BTreeMap::from([("Degree".to_owned(), DeclaredClaims::of(&configuration))])
    }

    fn claims(value: Value) -> Map<String, Value> {
        value.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn all_three_shapes_of_declared_claims_are_read() {
        let v1 = json!({"claims": [
            {"path": ["given_name"], "mandatory": true},
            {"path": ["degree"]},
            {"path": ["address", "street"], "mandatory": true},
        ]});
        let expected = DeclaredClaims {
            known: ["given_name", "degree", "address"].map(String::from).into(),
            mandatory: ["given_name", "address"].map(String::from).into(),
        };
        assert_eq!(DeclaredClaims::of(&v1), Some(expected));
        let draft = json!({"claims": {"given_name": {"mandatory": true}, "degree": {}}});
        let vc = json!({"credential_definition": {"credentialSubject":
            {"given_name": {"mandatory": true}, "degree": {}}}});
        let expected = DeclaredClaims {
            known: ["given_name", "degree"].map(String::from).into(),
            mandatory: ["given_name"].map(String::from).into(),
        };
        assert_eq!(DeclaredClaims::of(&draft), Some(expected.clone()));
        assert_eq!(DeclaredClaims::of(&vc), Some(expected));
        assert_eq!(DeclaredClaims::of(&json!({"format": "jwt_vc_json"})), None);
    }

    #[test]
    fn missing_unknown_and_unoffered_claims_are_named_without_values() {
        let rules = declared(json!({"claims": [
            {"path": ["given_name"], "mandatory": true}, {"path": ["degree"]}]}));
        let offered = ["Degree".to_owned()];
        let ok = claims(json!({"Degree": {"given_name": "Alice", "degree": "BSc"}}));
        assert_eq!(check(&ok, &offered, &rules), Ok(()));

        let missing = claims(json!({"Degree": {"degree": "Secret-Value-1"}}));
        let e = check(&missing, &offered, &rules)
            .err()
            .map(|e| e.to_string());
        assert_eq!(
            e.as_deref(),
            Some("claims.Degree lacks the mandatory claim \"given_name\"")
        );

        let unknown =
            claims(json!({"Degree": {"given_name": "Secret-Value-2", "iban": "Secret-Value-3"}}));
        let e = check(&unknown, &offered, &rules)
            .err()
            .map(|e| e.to_string());
        assert_eq!(
            e.as_deref(),
            Some("claims.Degree has the claim \"iban\", which the configuration does not declare")
        );

        let elsewhere = claims(json!({"Other": {"x": "Secret-Value-4"}}));
        let e = check(&elsewhere, &offered, &rules)
            .err()
            .map(|e| e.to_string());
        assert!(
            e.as_deref().is_some_and(|e| e.contains("\"Other\"")),
            "{e:?}"
        );

        let flat = claims(json!({"Degree": "Secret-Value-5"}));
        let e = check(&flat, &offered, &rules).err().map(|e| e.to_string());
        assert!(e.as_deref().is_some_and(|e| !e.contains("Secret")), "{e:?}");
    }

    #[test]
    fn a_configuration_that_declares_no_claims_takes_any() {
        let rules = declared(json!({"format": "jwt_vc_json"}));
        let given = claims(json!({"Degree": {"anything": 1}}));
        assert_eq!(check(&given, &["Degree".to_owned()], &rules), Ok(()));
    }
}
