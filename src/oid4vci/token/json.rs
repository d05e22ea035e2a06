//! Reading a JSON token request field by field, so that an error names the
//! field and the type it wants but never quotes the value sent. serde's own
//! messages do (``invalid type: integer `-123456` ``), and the value of a
//! mistyped field may be a PIN or a code.
//!
//! Every `visit_*` a JSON value can reach is written out below; the ones left
//! to serde's defaults (`i128`, `char`, enums...) are never called by
//! serde_json, and their default messages would not quote a value either.

use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use super::{RawRequest, SecretField};

impl<'de> de::Deserialize<'de> for RawRequest {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(RequestVisitor)
    }
}

/// A JSON body that is not an object: refused without quoting it.
fn not_an_object<E: de::Error>() -> E {
    E::custom("the body must be a JSON object")
}

struct RequestVisitor;

impl<'de> Visitor<'de> for RequestVisitor {
    type Value = RawRequest;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawRequest, A::Error> {
        let mut raw = RawRequest::default();
        let mut seen: Vec<&'static str> = Vec::new();
        while let Some(name) = map.next_key::<Name>()? {
            if let Some(field) = name.as_str() {
                if seen.contains(&field) {
                    return Err(de::Error::custom(format_args!(
                        "parameter \"{field}\" is repeated"
                    )));
                }
                seen.push(field);
            }
            match name {
                Name::GrantType => raw.grant_type = map.next_value_seed(StringField::text(name))?,
                Name::ClientId => raw.client_id = map.next_value_seed(StringField::text(name))?,
                Name::Code => {
                    raw.code = map
                        .next_value_seed(StringField::secret(name))?
                        .map(SecretField)
                }
                Name::TxCode => {
                    raw.tx_code = map
                        .next_value_seed(StringField::secret(name))?
                        .map(SecretField)
                }
                Name::UserPin => {
                    raw.user_pin = map
                        .next_value_seed(StringField::secret(name))?
                        .map(SecretField)
                }
                Name::AuthorizationDetails => raw.authorization_details = map.next_value()?,
                Name::Other => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(raw)
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<RawRequest, E> {
        Err(not_an_object())
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<RawRequest, E> {
        Err(not_an_object())
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<RawRequest, E> {
        Err(not_an_object())
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<RawRequest, E> {
        Err(not_an_object())
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<RawRequest, E> {
        Err(not_an_object())
    }
    fn visit_bytes<E: de::Error>(self, _: &[u8]) -> Result<RawRequest, E> {
        Err(not_an_object())
    }
    fn visit_unit<E: de::Error>(self) -> Result<RawRequest, E> {
        Err(not_an_object())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, _: A) -> Result<RawRequest, A::Error> {
        Err(not_an_object())
    }
}

/// The members of a token request notary reads; any other is ignored.
#[derive(Clone, Copy)]
enum Name {
    GrantType,
    Code,
    TxCode,
    UserPin,
    ClientId,
    AuthorizationDetails,
    Other,
}

impl Name {
    fn as_str(self) -> Option<&'static str> {
        Some(match self {
            Name::GrantType => "grant_type",
            Name::Code => "pre-authorized_code",
            Name::TxCode => "tx_code",
            Name::UserPin => "user_pin",
            Name::ClientId => "client_id",
            Name::AuthorizationDetails => "authorization_details",
            Name::Other => return None,
        })
    }
}

impl<'de> de::Deserialize<'de> for Name {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct NameVisitor;
        impl Visitor<'_> for NameVisitor {
            type Value = Name;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a member name")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Name, E> {
                Ok(match v {
                    "grant_type" => Name::GrantType,
                    "pre-authorized_code" => Name::Code,
                    "tx_code" => Name::TxCode,
                    "user_pin" => Name::UserPin,
                    "client_id" => Name::ClientId,
                    "authorization_details" => Name::AuthorizationDetails,
                    _ => Name::Other,
                })
            }
        }
        deserializer.deserialize_identifier(NameVisitor)
    }
}

/// A string member (`null` counts as absent). A secret one also takes a
/// non-negative integer as its digits: a PIN is a string, but some wallets
/// send it as a number.
struct StringField {
    name: &'static str,
    digits_too: bool,
}

impl StringField {
    fn text(name: Name) -> Self {
        Self {
            name: name.as_str().unwrap_or("a member"),
            digits_too: false,
        }
    }

    fn secret(name: Name) -> Self {
        Self {
            digits_too: true,
            ..Self::text(name)
        }
    }

    fn expected(&self) -> &'static str {
        if self.digits_too {
            "a string or a non-negative integer"
        } else {
            "a string"
        }
    }

    /// The error for a value of the wrong type: the field and the type it
    /// wants, never the value.
    fn wrong_type<E: de::Error>(&self) -> E {
        E::custom(format_args!("{} must be {}", self.name, self.expected()))
    }
}

impl<'de> DeserializeSeed<'de> for StringField {
    type Value = Option<String>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for StringField {
    type Value = Option<String>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.expected())
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Some(v.to_owned()))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
        Ok(Some(v))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        if self.digits_too {
            Ok(Some(v.to_string()))
        } else {
            Err(self.wrong_type())
        }
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
        Err(self.wrong_type())
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
        Err(self.wrong_type())
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
        Err(self.wrong_type())
    }
    fn visit_bytes<E: de::Error>(self, _: &[u8]) -> Result<Self::Value, E> {
        Err(self.wrong_type())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, _: A) -> Result<Self::Value, A::Error> {
        Err(self.wrong_type())
    }
    fn visit_map<A: MapAccess<'de>>(self, _: A) -> Result<Self::Value, A::Error> {
        Err(self.wrong_type())
    }
}

#[cfg(test)]
mod tests {
    use super::super::{BodyFormat, TokenRequest};

    fn error_of(body: &str) -> String {
        match TokenRequest::parse(BodyFormat::Json, body.as_bytes()) {
            Ok(_) => panic!("{body} was accepted"),
            Err(e) => e.0.into_owned(),
        }
    }

    #[test]
    fn a_mistyped_field_is_named_and_its_value_never_quoted() {
        let wrong = [
            "-987654",
            "987654.0",
            "9.87654e5",
            "-9876540000000000000000",
            "true",
            "[987654]",
            r#"{"pin":"987654"}"#,
            r#"["987654"]"#,
        ];
        for (field, expected) in [
            ("pre-authorized_code", "a string or a non-negative integer"),
            ("tx_code", "a string or a non-negative integer"),
            ("user_pin", "a string or a non-negative integer"),
            ("grant_type", "a string"),
            ("client_id", "a string"),
        ] {
            for value in wrong {
                let body = format!(r#"{{"{field}":{value}}}"#);
                let e = error_of(&body);
                assert!(!e.contains("987654"), "{body}: {e}");
                assert!(
                    e.contains(&format!("{field} must be {expected}")),
                    "{body}: {e}"
                );
            }
        }
    }

    #[test]
    fn a_body_that_is_not_an_object_is_not_quoted() {
        for body in [
            "987654",
            "-987654",
            "987654.5",
            r#""987654""#,
            "[987654]",
            "true",
            "null",
        ] {
            let e = error_of(body);
            assert!(!e.contains("987654"), "{body}: {e}");
            assert!(e.contains("the body must be a JSON object"), "{body}: {e}");
        }
    }

    #[test]
    fn null_is_absent_unknown_members_are_ignored_and_repeats_refused() {
        let req = TokenRequest::parse(
            BodyFormat::Json,
            br#"{"tx_code":null,"client_id":null,"x":[1,{"y":-2.5}],"pre-authorized_code":42}"#,
        )
        .unwrap();
        assert!(req.tx_code.is_none() && req.client_id.is_none());
        assert_eq!(req.code.unwrap().expose(), "42");
        let e = error_of(r#"{"user_pin":null,"user_pin":"987654"}"#);
        assert!(e.contains("\"user_pin\" is repeated"), "{e}");
        assert!(!e.contains("987654"), "{e}");
    }
}
