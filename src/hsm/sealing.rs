//! Sealing with the claims key, computed inside the token so the key never
//! leaves it and a copy of the database, backups included, holds only
//! ciphertext. Two schemes, chosen by the configuration (see
//! `capabilities::Sealing` and docs/threat-model.md):
//!
//! - **AES-256-GCM** (`CKM_AES_GCM`): `iv ‖ ciphertext ‖ tag`, a fresh
//!   96-bit IV from the operating system for every encryption (never a
//!   counter, which several instances sharing the key could not keep
//!   unique), and a 128-bit tag.
//! - **AES-256-CBC then HMAC-SHA256** (`CKM_AES_CBC`, `CKM_SHA256_HMAC`), for
//!   tokens without GCM such as a TPM: `iv ‖ ciphertext ‖ mac`, a fresh
//!   random 128-bit IV, PKCS#7 padding added and removed here, and the MAC
//!   computed by a second key over the scheme's name and the SHA-256 of the
//!   associated data's length and bytes, the IV and the ciphertext. Opening checks the MAC
//!   (in constant time) before anything is decrypted, so a changed byte
//!   never reaches the padding check and there is no padding oracle.
//! - **AES-256-CTR then HMAC-SHA256** (`CKM_AES_ECB`, `CKM_SHA256_HMAC`),
//!   for modules or links with neither GCM nor CBC (p11-kit 0.24's client
//!   forwards only ECB): `nonce ‖ ciphertext ‖ mac`. The token encrypts the
//!   counter blocks `nonce ‖ 1`, `nonce ‖ 2`, … (a fresh random 96-bit
//!   nonce, a 32-bit big-endian block counter, as in GCM) in one ECB call,
//!   and notary XORs that keystream with the plaintext. Opening makes the
//!   same keystream, so the claims key only ever encrypts. The MAC is as
//!   for CBC, under its own domain string.
//!
//! Either way the caller's associated data binds the ciphertext to where it
//! belongs; it is authenticated, not stored.

use cryptoki::mechanism::Mechanism;
use cryptoki::mechanism::aead::GcmParams;
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;
use zeroize::Zeroizing;

use super::capabilities::Sealing;
use super::pool::KeyRef;
use super::{Hsm, HsmError};

/// Length of the GCM IV, bytes (96 bits, the length GCM is designed for).
pub const IV_BYTES: usize = 12;
/// Length of the GCM tag, bytes.
pub const TAG_BYTES: usize = 16;

/// CBC: the AES block and IV size, bytes.
const BLOCK_BYTES: usize = 16;
/// CBC: the HMAC-SHA256 tag, bytes.
const MAC_BYTES: usize = 32;
/// CBC: what the MAC input starts with, so it can never be mistaken for
/// another HMAC input of the same key.
const MAC_DOMAIN: &[u8] = b"notary/claims/aes-256-cbc-hmac-sha256\n";
/// CTR: the nonce, bytes; the rest of each counter block is the counter.
const CTR_NONCE_BYTES: usize = 12;
/// CTR: the MAC's domain string, distinct from CBC's.
const CTR_MAC_DOMAIN: &[u8] = b"notary/claims/aes-256-ctr-hmac-sha256\n";

impl Hsm {
    /// Encrypts `plaintext` with the claims key, binding `aad`, by the
    /// configured scheme. `plaintext` is wiped when the call ends.
    pub async fn encrypt_claims(
        &self,
        aad: Vec<u8>,
        plaintext: Zeroizing<Vec<u8>>,
    ) -> Result<Vec<u8>, HsmError> {
        match self.sealing() {
            Sealing::AesGcm => self.encrypt_gcm(aad, plaintext).await,
            Sealing::AesCbcHmac => self.encrypt_cbc_hmac(aad, plaintext).await,
            Sealing::AesCtrHmac => self.encrypt_ctr_hmac(aad, plaintext).await,
        }
    }

    /// Decrypts what [`Hsm::encrypt_claims`] returned for the same `aad`;
    /// anything else (another offer's ciphertext, a changed byte) fails and
    /// no plaintext comes out.
    pub async fn decrypt_claims(
        &self,
        aad: Vec<u8>,
        sealed: Vec<u8>,
    ) -> Result<Zeroizing<Vec<u8>>, HsmError> {
        match self.sealing() {
            Sealing::AesGcm => self.decrypt_gcm(aad, sealed).await,
            Sealing::AesCbcHmac => self.decrypt_cbc_hmac(aad, sealed).await,
            Sealing::AesCtrHmac => self.decrypt_ctr_hmac(aad, sealed).await,
        }
    }

    async fn encrypt_cbc_hmac(
        &self,
        aad: Vec<u8>,
        plaintext: Zeroizing<Vec<u8>>,
    ) -> Result<Vec<u8>, HsmError> {
        let iv = random_iv::<BLOCK_BYTES>()?;
        let padded = pkcs7_pad(&plaintext);
        drop(plaintext);
        let ciphertext = self
            .inner
            .run("sealing claims", KeyRef::Claims, move |session, handle| {
                session.encrypt(&Mechanism::AesCbc(iv), handle, &padded)
            })
            .await?;
        let mac = self.claims_mac(MAC_DOMAIN, &aad, &iv, &ciphertext).await?;
        Ok([&iv[..], &ciphertext, &mac].concat())
    }

    async fn decrypt_cbc_hmac(
        &self,
        aad: Vec<u8>,
        sealed: Vec<u8>,
    ) -> Result<Zeroizing<Vec<u8>>, HsmError> {
        let (iv, ciphertext) = self
            .verified::<BLOCK_BYTES>(MAC_DOMAIN, &aad, &sealed, |n| n > 0 && n % BLOCK_BYTES == 0)
            .await?;
        let ciphertext = ciphertext.to_vec();
        let padded = self
            .inner
            .run(
                "opening sealed claims",
                KeyRef::Claims,
                move |session, handle| {
                    session
                        .decrypt(&Mechanism::AesCbc(iv), handle, &ciphertext)
                        .map(Zeroizing::new)
                },
            )
            .await?;
        pkcs7_unpad(padded).ok_or_else(|| refused("the sealed value's padding is malformed"))
    }

    async fn encrypt_ctr_hmac(
        &self,
        aad: Vec<u8>,
        plaintext: Zeroizing<Vec<u8>>,
    ) -> Result<Vec<u8>, HsmError> {
        let nonce = random_iv::<CTR_NONCE_BYTES>()?;
        let keystream = self.keystream(nonce, plaintext.len()).await?;
        let ciphertext: Vec<u8> = plaintext
            .iter()
            .zip(keystream.iter())
            .map(|(p, k)| p ^ k)
            .collect();
        let mac = self
            .claims_mac(CTR_MAC_DOMAIN, &aad, &nonce, &ciphertext)
            .await?;
        Ok([&nonce[..], &ciphertext, &mac].concat())
    }

    async fn decrypt_ctr_hmac(
        &self,
        aad: Vec<u8>,
        sealed: Vec<u8>,
    ) -> Result<Zeroizing<Vec<u8>>, HsmError> {
        let (nonce, ciphertext) = self
            .verified::<CTR_NONCE_BYTES>(CTR_MAC_DOMAIN, &aad, &sealed, |_| true)
            .await?;
        let keystream = self.keystream(nonce, ciphertext.len()).await?;
        Ok(Zeroizing::new(
            ciphertext
                .iter()
                .zip(keystream.iter())
                .map(|(c, k)| c ^ k)
                .collect(),
        ))
    }

    /// `len` bytes of AES-256-CTR keystream under the claims key: the
    /// counter blocks for `nonce`, encrypted by the token in one ECB call.
    async fn keystream(
        &self,
        nonce: [u8; CTR_NONCE_BYTES],
        len: usize,
    ) -> Result<Zeroizing<Vec<u8>>, HsmError> {
        let counters = counter_blocks(&nonce, len).ok_or_else(|| HsmError::Internal {
            context: "sealing claims",
            detail: "the claims are too long for one keystream".to_owned(),
        })?;
        if counters.is_empty() {
            return Ok(Zeroizing::new(Vec::new()));
        }
        let keystream = self
            .inner
            .run(
                "making a keystream",
                KeyRef::Claims,
                move |session, handle| {
                    session
                        .encrypt(&Mechanism::AesEcb, handle, &counters)
                        .map(Zeroizing::new)
                },
            )
            .await?;
        if keystream.len() != counters_len(len) {
            return Err(HsmError::Internal {
                context: "making a keystream",
                detail: "AES-ECB returned the wrong length".to_owned(),
            });
        }
        Ok(keystream)
    }

    /// The MAC of a CBC- or CTR-sealed value under the scheme's `domain`,
    /// computed with the claims MAC key.
    /// Splits `iv || ciphertext || mac`, whose ciphertext length must pass
    /// `length_ok`, and checks the MAC (in constant time) before anything
    /// is decrypted; the IV and the ciphertext.
    async fn verified<'s, const IV: usize>(
        &self,
        domain: &'static [u8],
        aad: &[u8],
        sealed: &'s [u8],
        length_ok: impl Fn(usize) -> bool,
    ) -> Result<([u8; IV], &'s [u8]), HsmError> {
        let body_len = sealed
            .len()
            .checked_sub(IV + MAC_BYTES)
            .filter(|n| length_ok(*n))
            .ok_or_else(|| refused("the sealed value has the wrong length"))?;
        let (iv, rest) = sealed.split_at(IV);
        let (ciphertext, mac) = rest.split_at(body_len);
        let iv: [u8; IV] = iv
            .try_into()
            .map_err(|_| refused("the sealed value has the wrong length"))?;
        let expected = self.claims_mac(domain, aad, &iv, ciphertext).await?;
        if !bool::from(expected.ct_eq(mac)) {
            return Err(refused("the sealed value's MAC does not verify"));
        }
        Ok((iv, ciphertext))
    }

    async fn claims_mac(
        &self,
        domain: &'static [u8],
        aad: &[u8],
        iv: &[u8],
        ciphertext: &[u8],
    ) -> Result<[u8; MAC_BYTES], HsmError> {
        // The token MACs a SHA-256 digest of the sealed value, not the value
        // itself: tpm2-pkcs11 refuses HMAC input over 4096 bytes, and claims
        // can be longer. Forging then needs a SHA-256 collision as well.
        let mut digest = Sha256::new();
        digest.update(u64::try_from(aad.len()).unwrap_or(u64::MAX).to_be_bytes());
        digest.update(aad);
        digest.update(iv);
        digest.update(ciphertext);
        let mut input = domain.to_vec();
        input.extend_from_slice(&digest.finalize());
        let mac = self
            .inner
            .run(
                "authenticating sealed claims",
                KeyRef::ClaimsMac,
                move |session, handle| session.sign(&Mechanism::Sha256Hmac, handle, &input),
            )
            .await?;
        mac.try_into().map_err(|_| HsmError::Internal {
            context: "authenticating sealed claims",
            detail: "HMAC-SHA256 did not return 32 bytes".to_owned(),
        })
    }

    /// AES-GCM: `iv ‖ ciphertext ‖ tag`.
    async fn encrypt_gcm(
        &self,
        aad: Vec<u8>,
        plaintext: Zeroizing<Vec<u8>>,
    ) -> Result<Vec<u8>, HsmError> {
        let iv = random_iv::<IV_BYTES>()?;
        // A retry after stale handles reuses this IV, but only for the same
        // key, plaintext and associated data: the output is identical, so
        // nothing is learnt from the repetition.
        let sealed_body = self
            .inner
            .run("sealing claims", KeyRef::Claims, move |session, handle| {
                let mut iv = iv;
                let params = GcmParams::new(&mut iv, &aad, tag_bits())?;
                session.encrypt(&Mechanism::AesGcm(params), handle, &plaintext)
            })
            .await?;
        let mut sealed = Vec::with_capacity(IV_BYTES + sealed_body.len());
        sealed.extend_from_slice(&iv);
        sealed.extend_from_slice(&sealed_body);
        Ok(sealed)
    }

    /// AES-GCM opening. Tokens report a tag mismatch as
    /// `CKR_ENCRYPTED_DATA_INVALID`, or, as SoftHSM does, `CKR_GENERAL_ERROR`;
    /// either way no plaintext comes out.
    async fn decrypt_gcm(
        &self,
        aad: Vec<u8>,
        sealed: Vec<u8>,
    ) -> Result<Zeroizing<Vec<u8>>, HsmError> {
        if sealed.len() < IV_BYTES + TAG_BYTES {
            return Err(HsmError::Internal {
                context: "opening sealed claims",
                detail: "the sealed value is shorter than an IV and a tag".to_owned(),
            });
        }
        self.inner
            .run(
                "opening sealed claims",
                KeyRef::Claims,
                move |session, handle| {
                    let (iv, body) = sealed.split_at(IV_BYTES);
                    let mut iv = <[u8; IV_BYTES]>::try_from(iv).unwrap_or_default();
                    let params = GcmParams::new(&mut iv, &aad, tag_bits())?;
                    session
                        .decrypt(&Mechanism::AesGcm(params), handle, body)
                        .map(Zeroizing::new)
                },
            )
            .await
    }
}

/// The tag length in bits, as `CK_GCM_PARAMS.ulTagBits` wants it.
fn tag_bits() -> cryptoki::types::Ulong {
    const TAG_BITS: u64 = 8 * TAG_BYTES as u64;
    cryptoki::types::Ulong::from(TAG_BITS)
}

/// A fresh IV from the operating system (never a counter: several
/// instances share the key).
/// A sealed value that does not open: the reason, never its content.
fn refused(why: &str) -> HsmError {
    HsmError::Internal {
        context: "opening sealed claims",
        detail: why.to_owned(),
    }
}

fn random_iv<const N: usize>() -> Result<[u8; N], HsmError> {
    let mut iv = [0u8; N];
    getrandom::fill(&mut iv).map_err(|e| HsmError::Internal {
        context: "making an IV for sealing claims",
        detail: e.to_string(),
    })?;
    Ok(iv)
}

/// The bytes of whole counter blocks covering `len` bytes.
fn counters_len(len: usize) -> usize {
    len.div_ceil(BLOCK_BYTES) * BLOCK_BYTES
}

/// The CTR counter blocks `nonce ‖ 1`, `nonce ‖ 2`, … covering `len` bytes
/// (the counter starts at 1, as in GCM); `None` beyond 2^32 - 1 blocks.
fn counter_blocks(nonce: &[u8; CTR_NONCE_BYTES], len: usize) -> Option<Vec<u8>> {
    let blocks = u32::try_from(len.div_ceil(BLOCK_BYTES)).ok()?;
    let mut out = Vec::with_capacity(counters_len(len));
    for counter in 1..=blocks {
        out.extend_from_slice(nonce);
        out.extend_from_slice(&counter.to_be_bytes());
    }
    Some(out)
}

/// PKCS#7 padding to a whole number of AES blocks (1 to 16 bytes, each the
/// pad length). The copy is wiped when dropped.
fn pkcs7_pad(plaintext: &[u8]) -> Zeroizing<Vec<u8>> {
    let pad = BLOCK_BYTES - plaintext.len() % BLOCK_BYTES;
    let mut padded = Zeroizing::new(Vec::with_capacity(plaintext.len() + pad));
    padded.extend_from_slice(plaintext);
    padded.resize(plaintext.len() + pad, u8::try_from(pad).unwrap_or(16));
    padded
}

/// Removes PKCS#7 padding; `None` when it is malformed. Only ever called on
/// a value whose MAC verified, so its timing tells an attacker nothing.
fn pkcs7_unpad(mut padded: Zeroizing<Vec<u8>>) -> Option<Zeroizing<Vec<u8>>> {
    let pad = usize::from(*padded.last()?);
    if pad == 0 || pad > BLOCK_BYTES || pad > padded.len() {
        return None;
    }
    let body = padded.len() - pad;
    if padded[body..].iter().any(|b| usize::from(*b) != pad) {
        return None;
    }
    padded.truncate(body);
    Some(padded)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counter_blocks_cover_the_length_and_never_repeat() {
        let nonce = [7u8; CTR_NONCE_BYTES];
        assert_eq!(counter_blocks(&nonce, 0), Some(Vec::new()));
        for len in [1, 15, 16, 17, 100] {
            let blocks = counter_blocks(&nonce, len).unwrap();
            assert_eq!(blocks.len(), counters_len(len));
            assert!(blocks.len() >= len && blocks.len() < len + BLOCK_BYTES);
            let chunks: Vec<&[u8]> = blocks.chunks(BLOCK_BYTES).collect();
            for (i, block) in chunks.iter().enumerate() {
                assert_eq!(&block[..CTR_NONCE_BYTES], &nonce);
                assert_eq!(block[CTR_NONCE_BYTES..], (i as u32 + 1).to_be_bytes());
            }
        }
    }

    #[test]
    fn pkcs7_padding_round_trips_and_refuses_malformed_padding() {
        for len in 0..40 {
            let plaintext: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let padded = pkcs7_pad(&plaintext);
            assert_eq!(padded.len() % BLOCK_BYTES, 0);
            assert!(padded.len() > plaintext.len());
            assert_eq!(
                pkcs7_unpad(padded).unwrap().as_slice(),
                plaintext.as_slice()
            );
        }
        for bad in [&[][..], &[0u8; 16][..], &[17u8; 16][..], &[3, 3, 2][..]] {
            assert!(
                pkcs7_unpad(Zeroizing::new(bad.to_vec())).is_none(),
                "{bad:?}"
            );
        }
    }
}
