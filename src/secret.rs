//! Secret newtypes: values that must never be logged, serialised or left in memory.
//!
//! Each type zeroizes its bytes on drop, prints `[REDACTED]` in `Debug`, and has
//! no `Display` or `Serialize`. Reading the value takes an explicit
//! `expose()` call, so every place a secret is used is easy to find in review.

use std::fmt;

use zeroize::{Zeroize, ZeroizeOnDrop};

macro_rules! secret_string {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        // No Clone (one copy only) and no PartialEq (secrets are compared
        // as keyed hashes, in constant time).
        #[derive(Zeroize, ZeroizeOnDrop)]
        pub struct $name(String);

        impl $name {
            /// Wraps a value; the caller hands over ownership of its only copy.
            pub fn new(value: String) -> Self {
                Self(value)
            }

            /// The secret value. Keep the borrow short and never log it.
            pub fn expose(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(concat!(stringify!($name), "([REDACTED])"))
            }
        }
    };
}

secret_string!(
    /// The one-time pre-authorized code carried in a credential offer.
    PreAuthorizedCode
);
secret_string!(
    /// The unguessable reference in a by-reference offer's URL; whoever has
    /// it can fetch the offer, and the offer's code is derived from it.
    OfferReference
);
secret_string!(
    /// The PIN (`tx_code`) sent to the holder out of band.
    TxCode
);
secret_string!(
    /// An admin API key, as presented in `Authorization: Bearer`.
    ApiKeySecret
);
secret_string!(
    /// The HSM user PIN.
    HsmPin
);

/// The raw body of a token request: it holds a code and a PIN until parsed.
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct RequestBody(Vec<u8>);

impl RequestBody {
    /// Wraps bytes read from the socket.
    pub fn new(bytes: Vec<u8>) -> Self {
        Self(bytes)
    }

    /// The bytes, for the parser.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for RequestBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RequestBody([REDACTED], {} bytes)", self.0.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_value() {
        let code = PreAuthorizedCode::new("super-secret-code".to_owned());
        let pin = TxCode::new("493536".to_owned());
        let printed = format!("{code:?} {pin:?}");
        assert!(!printed.contains("super-secret-code"));
        assert!(!printed.contains("493536"));
        assert!(printed.contains("[REDACTED]"));
    }

    #[test]
    fn expose_returns_the_value() {
        assert_eq!(TxCode::new("0042".to_owned()).expose(), "0042");
    }
}
