//! Sealing with the claims key: AES-256-GCM computed inside the token
//! (`C_Encrypt`/`C_Decrypt` with `CKM_AES_GCM`), so the key never leaves it
//! and a copy of the database, backups included, holds only ciphertext.
//!
//! The sealed form is `iv ‖ ciphertext ‖ tag`: a fresh 96-bit IV from the
//! operating system for every encryption (never a counter, which several
//! instances sharing the key could not keep unique), and a 128-bit tag.
//! The caller's associated data binds the ciphertext to where it belongs;
//! it is authenticated, not stored.

use cryptoki::mechanism::Mechanism;
use cryptoki::mechanism::aead::GcmParams;
use zeroize::Zeroizing;

use super::pool::KeyRef;
use super::{Hsm, HsmError};

/// Length of the GCM IV, bytes (96 bits, the length GCM is designed for).
pub const IV_BYTES: usize = 12;
/// Length of the GCM tag, bytes.
pub const TAG_BYTES: usize = 16;

impl Hsm {
    /// Encrypts `plaintext` with the claims key, binding `aad`; returns
    /// `iv ‖ ciphertext ‖ tag`. `plaintext` is wiped when the call ends.
    pub async fn encrypt_claims(
        &self,
        aad: Vec<u8>,
        plaintext: Zeroizing<Vec<u8>>,
    ) -> Result<Vec<u8>, HsmError> {
        let mut iv = [0u8; IV_BYTES];
        getrandom::fill(&mut iv).map_err(|e| HsmError::Internal {
            context: "making an IV for sealing claims",
            detail: e.to_string(),
        })?;
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

    /// Decrypts what [`Hsm::encrypt_claims`] returned for the same `aad`.
    /// Anything else (another offer's ciphertext, a changed byte) fails:
    /// tokens report a tag mismatch as `CKR_ENCRYPTED_DATA_INVALID`, or, as
    /// SoftHSM does, `CKR_GENERAL_ERROR`; either way no plaintext comes out.
    pub async fn decrypt_claims(
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
