//! What notary needs to know to issue each credential configuration, read
//! once from `credential_configurations_supported`: its format, its type
//! (`vct`, or the W3C `type` list) and which claims stay visible.
//!
//! A configuration may mark a claim `"sd": "never"` (in the 1.0 `claims`
//! array, as SD-JWT VC type metadata spells it) to keep it out of the
//! selective disclosures; every other claim of an SD-JWT VC is selectively
//! disclosable. The `sd` member is notary's and is not served in metadata.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value};

/// The formats notary issues.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// SD-JWT VC (`dc+sd-jwt`; `vc+sd-jwt` is its earlier name).
    SdJwtVc,
    /// W3C VC Data Model 1.1 as a JWT (`jwt_vc_json`).
    JwtVcJson,
}

impl Format {
    /// The format an identifier names (`vc+sd-jwt` is the earlier name of
    /// `dc+sd-jwt`); `None` for formats notary does not issue.
    pub fn parse(id: &str) -> Option<Self> {
        match id {
            "dc+sd-jwt" | "vc+sd-jwt" => Some(Format::SdJwtVc),
            "jwt_vc_json" => Some(Format::JwtVcJson),
            _ => None,
        }
    }

    /// The identifier recorded in the audit log.
    pub fn as_str(self) -> &'static str {
        match self {
            Format::SdJwtVc => "dc+sd-jwt",
            Format::JwtVcJson => "jwt_vc_json",
        }
    }
}

/// One credential configuration, as the credential endpoint uses it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CredentialProfile {
    /// The format.
    pub format: Format,
    /// `vct` (SD-JWT VC).
    pub vct: Option<String>,
    /// `credential_definition.type` (W3C VC).
    pub types: Vec<String>,
    /// `credential_definition.@context` beyond the base context (W3C VC).
    pub contexts: Vec<String>,
    /// Claims kept out of the selective disclosures.
    pub always_visible: BTreeSet<String>,
}

impl CredentialProfile {
    /// The first of `claims` whose name the format sets itself (or gives a
    /// meaning of its own), so that an offer naming it is refused when it is
    /// made rather than when its credential is requested.
    pub fn reserved_claim<'a>(&self, claims: &'a Map<String, Value>) -> Option<&'a str> {
        claims
            .keys()
            .map(String::as_str)
            .find(|name| match self.format {
                Format::SdJwtVc => crate::formats::sd_jwt_vc::RESERVED_CLAIMS.contains(name),
                Format::JwtVcJson => *name == "id" || name.starts_with('@'),
            })
    }
}

const W3C_BASE_CONTEXT: &str = "https://www.w3.org/2018/credentials/v1";

/// Reads every configuration; an error names the configuration and what it
/// lacks.
pub fn read(
    configurations: &Map<String, Value>,
) -> Result<BTreeMap<String, CredentialProfile>, String> {
    configurations
        .iter()
        .map(|(id, configuration)| Ok((id.clone(), profile(id, configuration)?)))
        .collect()
}

fn profile(id: &str, configuration: &Value) -> Result<CredentialProfile, String> {
    let format_id = configuration["format"]
        .as_str()
        .ok_or_else(|| format!("credential configuration {id:?} has no format"))?;
    let format = Format::parse(format_id).ok_or_else(|| {
        format!(
            "credential configuration {id:?} has format {format_id:?}; notary issues dc+sd-jwt and jwt_vc_json"
        )
    })?;
    let vct = configuration["vct"].as_str().map(str::to_owned);
    if format == Format::SdJwtVc && vct.is_none() {
        return Err(format!(
            "credential configuration {id:?} ({format_id}) needs a vct"
        ));
    }
    let strings = |pointer: &str| -> Vec<String> {
        configuration
            .pointer(pointer)
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default()
    };
    let types = strings("/credential_definition/type");
    if format == Format::JwtVcJson && types.is_empty() {
        return Err(format!(
            "credential configuration {id:?} (jwt_vc_json) needs credential_definition.type"
        ));
    }
    let contexts = strings("/credential_definition/@context")
        .into_iter()
        .filter(|c| c != W3C_BASE_CONTEXT)
        .collect();
    let always_visible = configuration["claims"]
        .as_array()
        .map(|entries| {
            entries
                .iter()
                // Only top-level claims are disclosable one by one: a marker
                // on a nested path would have to reveal its whole parent,
                // so it is not honoured (the claim stays disclosable).
                .filter(|e| e["sd"] == "never")
                .filter(|e| e["path"].as_array().is_some_and(|p| p.len() == 1))
                .filter_map(|e| e.pointer("/path/0").and_then(Value::as_str))
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    Ok(CredentialProfile {
        format,
        vct,
        types,
        contexts,
        always_visible,
    })
}

/// A configuration as served in metadata: notary's own `sd` markers removed.
pub fn served(configuration: &Value) -> Value {
    let mut served = configuration.clone();
    if let Some(entries) = served.get_mut("claims").and_then(Value::as_array_mut) {
        for entry in entries {
            if let Some(entry) = entry.as_object_mut() {
                entry.remove("sd");
            }
        }
    }
    served
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn both_formats_are_read_and_others_refused() {
        let configs = json!({
            "Degree": {"format": "dc+sd-jwt", "vct": "https://x/degree",
                       "claims": [{"path": ["given_name"]}, {"path": ["degree"], "sd": "never"},
                                  {"path": ["address", "street"], "sd": "never"}]},
            "Member": {"format": "jwt_vc_json", "credential_definition": {
                "@context": ["https://www.w3.org/2018/credentials/v1", "https://x/ctx"],
                "type": ["VerifiableCredential", "DataSpaceCredential"]}},
        });
        let profiles = read(configs.as_object().unwrap()).unwrap();
        assert_eq!(profiles["Degree"].format, Format::SdJwtVc);
        assert_eq!(
            profiles["Degree"].always_visible,
            BTreeSet::from(["degree".to_owned()])
        );
        assert_eq!(
            profiles["Member"].contexts,
            vec!["https://x/ctx".to_owned()]
        );
        for bad in [
            json!({"X": {"format": "mso_mdoc"}}),
            json!({"X": {"format": "dc+sd-jwt"}}),
            json!({"X": {"format": "jwt_vc_json"}}),
            json!({"X": {}}),
        ] {
            assert!(read(bad.as_object().unwrap()).is_err(), "{bad}");
        }
        assert!(
            served(&configs["Degree"])
                .to_string()
                .find("\"sd\"")
                .is_none()
        );
    }
}
