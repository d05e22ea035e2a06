//! What the token can do, read from it instead of assumed.
//!
//! SoftHSM2 offers every mechanism notary uses; real modules do not (a TPM
//! has no Ed25519 and no AES-GCM, a p11-kit link filters mechanisms out).
//! At start-up notary reads the token's mechanism list once, chooses a
//! mechanism for each key role, and refuses to start, in one line naming
//! the role, the missing mechanism and what to configure instead, when a
//! role has none. `notary check` prints the choices.

use cryptoki::context::Pkcs11;
use cryptoki::mechanism::MechanismType;
use cryptoki::slot::{Limit, Slot};

use super::HsmError;
use crate::jose::Algorithm;

/// How a P-256 key signs on this token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EcdsaMode {
    /// `CKM_ECDSA` over a SHA-256 digest made by notary (what SoftHSM2, the
    /// TPM and most HSMs offer; the message itself never reaches the token).
    OverDigest,
    /// `CKM_ECDSA_SHA256`: the token hashes the message itself.
    HashingInToken,
}

/// How offer claims are sealed on this token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sealing {
    /// AES-256-GCM with the claims key.
    AesGcm,
    /// AES-256-CBC with the claims key, then HMAC-SHA256 with the claims
    /// MAC key over everything (encrypt-then-MAC), for tokens without GCM.
    AesCbcHmac,
    /// AES-256-CTR whose keystream the token makes with `CKM_AES_ECB`, then
    /// HMAC-SHA256 as above: for modules (or links, such as p11-kit 0.24's)
    /// that offer neither GCM nor CBC.
    AesCtrHmac,
}

/// The cipher used under a claims MAC key (`hsm.claims_cipher`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MacCipher {
    /// AES-256-CBC (`CKM_AES_CBC`).
    #[default]
    Cbc,
    /// AES-256-CTR built on `CKM_AES_ECB`.
    Ctr,
}

impl Sealing {
    /// The mechanisms, as `check` prints them.
    pub fn describe(self) -> &'static str {
        match self {
            Sealing::AesGcm => "CKM_AES_GCM",
            Sealing::AesCbcHmac => "CKM_AES_CBC + CKM_SHA256_HMAC (encrypt-then-MAC)",
            Sealing::AesCtrHmac => "AES-CTR from CKM_AES_ECB + CKM_SHA256_HMAC (encrypt-then-MAC)",
        }
    }

    /// Whether the claims MAC key is part of the scheme.
    pub fn uses_mac_key(self) -> bool {
        self != Sealing::AesGcm
    }
}

/// The operation a role needs from a mechanism.
#[derive(Debug, Clone, Copy)]
enum Use {
    Sign,
    Encrypt,
    Generate,
}

/// What a listed mechanism may do, from its `CK_MECHANISM_INFO` flags.
#[derive(Debug, Clone, Copy, Default)]
pub struct Operations {
    /// `CKF_SIGN`.
    pub sign: bool,
    /// `CKF_ENCRYPT` and `CKF_DECRYPT`.
    pub encrypt_decrypt: bool,
    /// `CKF_GENERATE` or `CKF_GENERATE_KEY_PAIR`.
    pub generate: bool,
}

/// Every mechanism a role may be given (the others are never asked about).
const CONSIDERED: [MechanismType; 9] = [
    MechanismType::EDDSA,
    MechanismType::ECDSA,
    MechanismType::ECDSA_SHA256,
    MechanismType::ECC_EDWARDS_KEY_PAIR_GEN,
    MechanismType::ECC_KEY_PAIR_GEN,
    MechanismType::SHA256_HMAC,
    MechanismType::AES_GCM,
    MechanismType::AES_CBC,
    MechanismType::AES_ECB,
];

/// The token's mechanisms and session limit, as read at start-up.
#[derive(Debug, Clone)]
pub struct Capabilities {
    mechanisms: Vec<(MechanismType, Operations)>,
    /// `CK_TOKEN_INFO.ulMaxSessionCount`, when the token states a number.
    pub max_sessions: Option<u64>,
}

impl Capabilities {
    /// Reads the mechanism list (with each mechanism's flags) and the
    /// session limit of the token in `slot`.
    pub fn read(pkcs11: &Pkcs11, slot: Slot) -> Result<Self, HsmError> {
        let types = pkcs11
            .get_mechanism_list(slot)
            .map_err(|e| HsmError::from_pkcs11("reading the token's mechanisms", e))?;
        let mut mechanisms = Vec::with_capacity(CONSIDERED.len());
        // Only the mechanisms notary could choose are described: one call
        // each, which over a network HSM's link is a round trip apiece.
        for mechanism in types.into_iter().filter(|m| CONSIDERED.contains(m)) {
            // A mechanism the module lists but will not describe is unusable.
            if let Ok(info) = pkcs11.get_mechanism_info(slot, mechanism) {
                let operations = Operations {
                    sign: info.sign(),
                    encrypt_decrypt: info.encrypt() && info.decrypt(),
                    generate: info.generate() || info.generate_key_pair(),
                };
                mechanisms.push((mechanism, operations));
            }
        }
        let max_sessions = match pkcs11
            .get_token_info(slot)
            .map_err(|e| HsmError::from_pkcs11("reading token info", e))?
            .max_session_count()
        {
            Limit::Max(n) => Some(n),
            Limit::Unavailable | Limit::Infinite => None,
        };
        Ok(Capabilities {
            mechanisms,
            max_sessions,
        })
    }

    /// Capabilities from a fixed list, for tests.
    #[cfg(test)]
    pub(crate) fn listing(mechanisms: Vec<(MechanismType, Operations)>) -> Self {
        Capabilities {
            mechanisms,
            max_sessions: None,
        }
    }

    fn can(&self, wanted: MechanismType, use_: Use) -> bool {
        self.mechanisms.iter().any(|(m, ops)| {
            *m == wanted
                && match use_ {
                    Use::Sign => ops.sign,
                    Use::Encrypt => ops.encrypt_decrypt,
                    Use::Generate => ops.generate,
                }
        })
    }

    /// The mechanism a key of `alg` signs with, or why there is none.
    /// `role` names the key's use in the message (e.g. "access tokens").
    pub fn signing(&self, role: &str, alg: Algorithm) -> Result<SignMechanism, String> {
        match alg {
            Algorithm::EdDSA if self.can(MechanismType::EDDSA, Use::Sign) => {
                Ok(SignMechanism::Eddsa)
            }
            Algorithm::EdDSA => Err(format!(
                "{role}: the token has no CKM_EDDSA for an Ed25519 key; use an ES256 (P-256) key instead"
            )),
            Algorithm::ES256 if self.can(MechanismType::ECDSA, Use::Sign) => {
                Ok(SignMechanism::Ecdsa(EcdsaMode::OverDigest))
            }
            Algorithm::ES256 if self.can(MechanismType::ECDSA_SHA256, Use::Sign) => {
                Ok(SignMechanism::Ecdsa(EcdsaMode::HashingInToken))
            }
            Algorithm::ES256 => Err(format!(
                "{role}: the token has neither CKM_ECDSA nor CKM_ECDSA_SHA256 for a P-256 key; \
                 use a module that signs with P-256"
            )),
        }
    }

    /// How P-256 keys sign here: raw `CKM_ECDSA` over notary's digest when
    /// the token has it, else `CKM_ECDSA_SHA256` (a token with neither has
    /// its P-256 keys refused by [`Capabilities::signing`]).
    pub fn ecdsa_mode(&self) -> EcdsaMode {
        match self.signing("", Algorithm::ES256) {
            Ok(SignMechanism::Ecdsa(mode)) => mode,
            _ => EcdsaMode::OverDigest,
        }
    }

    /// Whether the token can generate a key pair for `alg` itself (else the
    /// key must come from the vendor's tool and be adopted).
    pub fn generates_key_pair(&self, alg: Algorithm) -> bool {
        match alg {
            Algorithm::EdDSA => self.can(MechanismType::ECC_EDWARDS_KEY_PAIR_GEN, Use::Generate),
            Algorithm::ES256 => self.can(MechanismType::ECC_KEY_PAIR_GEN, Use::Generate),
        }
    }

    /// The keyed-hash mechanism, or why there is none.
    pub fn keyed_hash(&self) -> Result<&'static str, String> {
        if self.can(MechanismType::SHA256_HMAC, Use::Sign) {
            Ok("CKM_SHA256_HMAC")
        } else {
            Err(
                "keyed hash: the token has no CKM_SHA256_HMAC; notary needs an HMAC-SHA256 key \
                 on a module that computes HMAC-SHA256"
                    .to_owned(),
            )
        }
    }

    /// How claims are sealed: AES-GCM, unless a claims MAC key is
    /// configured (`mac_cipher` is then `hsm.claims_cipher`), which selects
    /// AES-CBC or AES-CTR with HMAC. The choice follows the configuration,
    /// never the token alone, so that a module update adding a mechanism
    /// cannot make sealed claims unreadable.
    pub fn sealing(&self, mac_cipher: Option<MacCipher>) -> Result<Sealing, String> {
        let has = |m| self.can(m, Use::Encrypt);
        let ecb_hint = if has(MechanismType::AES_ECB) {
            "; it has CKM_AES_ECB: set hsm.claims_cipher = \"ctr\""
        } else {
            ""
        };
        match mac_cipher {
            None if has(MechanismType::AES_GCM) => Ok(Sealing::AesGcm),
            None => Err(format!(
                "claims encryption: the token has no CKM_AES_GCM; set hsm.claims_mac_key to an \
                 HMAC-SHA256 key to seal claims with AES-256 and HMAC-SHA256 instead{}",
                if has(MechanismType::AES_CBC) {
                    ""
                } else {
                    ecb_hint
                }
            )),
            Some(MacCipher::Cbc) if has(MechanismType::AES_CBC) => Ok(Sealing::AesCbcHmac),
            Some(MacCipher::Cbc) => Err(format!(
                "claims encryption: hsm.claims_mac_key is set, but the token has no \
                 CKM_AES_CBC to encrypt with{ecb_hint}"
            )),
            Some(MacCipher::Ctr) if has(MechanismType::AES_ECB) => Ok(Sealing::AesCtrHmac),
            Some(MacCipher::Ctr) => Err(
                "claims encryption: hsm.claims_cipher is \"ctr\", but the token has no \
                 CKM_AES_ECB to make its keystream with"
                    .to_owned(),
            ),
        }
    }
}

/// The mechanism a signing key uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignMechanism {
    /// `CKM_EDDSA`, pure Ed25519.
    Eddsa,
    /// ECDSA on P-256.
    Ecdsa(EcdsaMode),
}

impl SignMechanism {
    /// The mechanism's PKCS#11 name.
    pub fn name(self) -> &'static str {
        match self {
            SignMechanism::Eddsa => "CKM_EDDSA",
            SignMechanism::Ecdsa(EcdsaMode::OverDigest) => "CKM_ECDSA (SHA-256 computed by notary)",
            SignMechanism::Ecdsa(EcdsaMode::HashingInToken) => "CKM_ECDSA_SHA256",
        }
    }
}

/// How many operation sessions the pool may open: the configured number,
/// lowered so that they and the keeper session stay within the token's
/// `ulMaxSessionCount`. `Err` when the token allows fewer than two.
pub fn session_budget(configured: usize, max_sessions: Option<u64>) -> Result<usize, String> {
    let configured = configured.max(1);
    let Some(max) = max_sessions else {
        return Ok(configured);
    };
    let max = usize::try_from(max).unwrap_or(usize::MAX);
    if max < 2 {
        return Err(format!(
            "the token allows {max} session(s); notary needs at least 2 (one kept logged in, one to work in)"
        ));
    }
    Ok(configured.min(max - 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SIGN: Operations = Operations {
        sign: true,
        encrypt_decrypt: false,
        generate: false,
    };
    const CRYPT: Operations = Operations {
        sign: false,
        encrypt_decrypt: true,
        generate: false,
    };
    const GENERATE: Operations = Operations {
        sign: false,
        encrypt_decrypt: false,
        generate: true,
    };

    fn mechanism(m: MechanismType, ops: Operations) -> (MechanismType, Operations) {
        (m, ops)
    }

    /// What tpm2-pkcs11 on a TPM 2.0 offers, in the parts notary uses.
    fn tpm() -> Capabilities {
        Capabilities::listing(vec![
            mechanism(MechanismType::ECDSA, SIGN),
            mechanism(MechanismType::SHA256_HMAC, SIGN),
            mechanism(MechanismType::AES_CBC, CRYPT),
            mechanism(MechanismType::ECC_KEY_PAIR_GEN, GENERATE),
        ])
    }

    #[test]
    fn a_token_without_eddsa_refuses_ed25519_keys_and_names_the_way_out() {
        let tpm = tpm();
        let refused = tpm.signing("access tokens", Algorithm::EdDSA).unwrap_err();
        assert!(refused.starts_with("access tokens: "), "{refused}");
        assert!(
            refused.contains("CKM_EDDSA") && refused.contains("ES256"),
            "{refused}"
        );
        assert_eq!(
            tpm.signing("credentials", Algorithm::ES256),
            Ok(SignMechanism::Ecdsa(EcdsaMode::OverDigest))
        );
        assert!(tpm.generates_key_pair(Algorithm::ES256));
        assert!(!tpm.generates_key_pair(Algorithm::EdDSA));
    }

    #[test]
    fn ecdsa_hashing_in_the_token_is_used_when_raw_ecdsa_is_missing() {
        let caps = Capabilities::listing(vec![mechanism(MechanismType::ECDSA_SHA256, SIGN)]);
        assert_eq!(
            caps.signing("credentials", Algorithm::ES256),
            Ok(SignMechanism::Ecdsa(EcdsaMode::HashingInToken))
        );
        let none = Capabilities::listing(vec![mechanism(MechanismType::ECDSA, CRYPT)]);
        assert!(none.signing("credentials", Algorithm::ES256).is_err());
    }

    #[test]
    fn claims_sealing_follows_the_configuration_and_says_what_to_set() {
        let tpm = tpm();
        let refused = tpm.sealing(None).unwrap_err();
        assert!(refused.contains("CKM_AES_GCM") && refused.contains("hsm.claims_mac_key"));
        assert_eq!(tpm.sealing(Some(MacCipher::Cbc)), Ok(Sealing::AesCbcHmac));
        assert!(
            tpm.sealing(Some(MacCipher::Ctr))
                .unwrap_err()
                .contains("CKM_AES_ECB")
        );
        let gcm = Capabilities::listing(vec![
            mechanism(MechanismType::AES_GCM, CRYPT),
            mechanism(MechanismType::AES_CBC, CRYPT),
        ]);
        assert_eq!(gcm.sealing(None), Ok(Sealing::AesGcm));
        // A MAC key configured keeps CBC + HMAC even where GCM exists.
        assert_eq!(gcm.sealing(Some(MacCipher::Cbc)), Ok(Sealing::AesCbcHmac));
        let no_aes = Capabilities::listing(vec![mechanism(MechanismType::SHA256_HMAC, SIGN)]);
        assert!(
            no_aes
                .sealing(Some(MacCipher::Cbc))
                .unwrap_err()
                .contains("CKM_AES_CBC")
        );
        // Behind p11-kit 0.24 only ECB is left: the refusals point to CTR.
        let link = Capabilities::listing(vec![
            mechanism(MechanismType::AES_ECB, CRYPT),
            mechanism(MechanismType::SHA256_HMAC, SIGN),
        ]);
        assert!(
            link.sealing(None)
                .unwrap_err()
                .contains("claims_cipher = \"ctr\"")
        );
        assert!(
            link.sealing(Some(MacCipher::Cbc))
                .unwrap_err()
                .contains("claims_cipher = \"ctr\"")
        );
        assert_eq!(link.sealing(Some(MacCipher::Ctr)), Ok(Sealing::AesCtrHmac));
        assert!(no_aes.keyed_hash().is_ok());
        assert!(Capabilities::listing(vec![]).keyed_hash().is_err());
    }

    #[test]
    fn the_pool_stays_within_the_tokens_session_limit() {
        assert_eq!(session_budget(8, None), Ok(8));
        assert_eq!(session_budget(8, Some(100)), Ok(8));
        assert_eq!(session_budget(8, Some(4)), Ok(3));
        assert_eq!(session_budget(0, Some(4)), Ok(1));
        assert!(session_budget(8, Some(1)).is_err());
    }
}
