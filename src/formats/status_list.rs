//! Credential status: lists of small integers, one per issued credential,
//! published signed so relying parties can check a credential without
//! telling the issuer which one they hold (herd privacy).
//!
//! - [`StatusBits`]: the statuses themselves, packed as the IETF draft
//!   packs them;
//! - [`token_status_list`]: the IETF Token Status List
//!   (draft-ietf-oauth-status-list), a `statuslist+jwt` referenced from
//!   SD-JWT VC by `status.status_list`;
//! - [`bitstring_status_list`]: the W3C Bitstring Status List v1.0, a
//!   status list credential referenced from `jwt_vc_json` credentials by a
//!   `BitstringStatusListEntry`;
//! - [`IndexPermutation`]: random-looking, never reused list indexes from a
//!   counter and a per-list key.
//!
//! As everywhere in [`super`], nothing here does I/O or holds a signing
//! key: lists are prepared as [`super::Unsigned`] JWS for the HSM to sign.

pub mod bitstring_status_list;
mod permutation;
pub mod token_status_list;

use std::fmt;
use std::io::{Read, Write as _};

use flate2::Compression;
use flate2::bufread::{GzDecoder, ZlibDecoder};
use flate2::write::{GzEncoder, ZlibEncoder};

pub use permutation::IndexPermutation;

use super::FormatError;

/// The largest uncompressed list accepted, built or decoded: 16 MiB, room
/// for 134 million 1-bit statuses. Decoding stops there, so a small
/// compressed list cannot inflate without bound.
pub const MAX_LIST_BYTES: usize = 16 * 1024 * 1024;

/// A list's statuses, one small integer of [`bits`](Self::bits) bits per
/// index, packed as the Token Status List packs them: index 0 in the least
/// significant bits of byte 0, filling each byte upwards. The W3C bitstring
/// (index 0 in the most significant bit) is derived from this on encoding.
#[derive(Clone, PartialEq, Eq)]
pub struct StatusBits {
    bits: u8,
    bytes: Vec<u8>,
    len: usize,
}

impl StatusBits {
    /// `len` statuses of `bits` bits each (1, 2, 4 or 8), all 0 (valid).
    /// Refuses any other width, an empty list and one over
    /// [`MAX_LIST_BYTES`].
    pub fn new(bits: u8, len: usize) -> Result<Self, FormatError> {
        check_bits(bits)?;
        if len == 0 {
            return Err(FormatError::StatusList("a list needs at least one entry"));
        }
        let bytes = len
            .checked_mul(usize::from(bits))
            .map(|total| total.div_ceil(8))
            .filter(|bytes| *bytes <= MAX_LIST_BYTES)
            .ok_or(FormatError::StatusList("the list is too long"))?;
        Ok(StatusBits {
            bits,
            bytes: vec![0; bytes],
            len,
        })
    }

    /// A list over packed bytes in the layout of [`as_bytes`](Self::as_bytes),
    /// as many statuses as the bytes hold. Refuses a width other than 1, 2,
    /// 4 or 8, no bytes, and more than [`MAX_LIST_BYTES`].
    pub fn from_bytes(bits: u8, bytes: Vec<u8>) -> Result<Self, FormatError> {
        check_bits(bits)?;
        if bytes.is_empty() {
            return Err(FormatError::StatusList("a list needs at least one entry"));
        }
        if bytes.len() > MAX_LIST_BYTES {
            return Err(FormatError::StatusList("the list is too long"));
        }
        let len = bytes.len() * 8 / usize::from(bits);
        Ok(StatusBits { bits, bytes, len })
    }

    /// Sets the status at `index`. Refuses an index outside the list and a
    /// value that does not fit in [`bits`](Self::bits) bits.
    pub fn set(&mut self, index: usize, value: u8) -> Result<(), FormatError> {
        if index >= self.len {
            return Err(FormatError::StatusList("the index is outside the list"));
        }
        if u16::from(value) >> self.bits != 0 {
            return Err(FormatError::StatusList(
                "the status does not fit in the list's bits",
            ));
        }
        let (byte, shift) = self.position(index);
        let mask = self.mask() << shift;
        let slot = self
            .bytes
            .get_mut(byte)
            .ok_or(FormatError::StatusList("the index is outside the list"))?;
        *slot = (*slot & !mask) | (value << shift);
        Ok(())
    }

    /// The status at `index`, or `None` outside the list.
    pub fn get(&self, index: usize) -> Option<u8> {
        if index >= self.len {
            return None;
        }
        let (byte, shift) = self.position(index);
        self.bytes
            .get(byte)
            .map(|value| (value >> shift) & self.mask())
    }

    /// Bits per status: 1, 2, 4 or 8.
    pub fn bits(&self) -> u8 {
        self.bits
    }

    /// The number of statuses (indexes `0..len`).
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the list has no statuses; never true for a list built here.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The packed bytes (Token Status List layout), e.g. to store the list.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The byte holding `index` and the shift of its lowest bit.
    fn position(&self, index: usize) -> (usize, u32) {
        let per_byte = usize::from(8 / self.bits);
        // index % per_byte < 8 / bits, so the shift is at most 7.
        let shift = (index % per_byte) as u32 * u32::from(self.bits);
        (index / per_byte, shift)
    }

    /// `bits` low bits set.
    fn mask(&self) -> u8 {
        u8::MAX >> (8 - self.bits)
    }
}

impl fmt::Debug for StatusBits {
    /// Widths and length only: the statuses are not for logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StatusBits")
            .field("bits", &self.bits)
            .field("len", &self.len)
            .finish_non_exhaustive()
    }
}

/// Refuses a status width the Token Status List does not allow.
fn check_bits(bits: u8) -> Result<(), FormatError> {
    if matches!(bits, 1 | 2 | 4 | 8) {
        Ok(())
    } else {
        Err(FormatError::StatusList(
            "a status must be 1, 2, 4 or 8 bits",
        ))
    }
}

/// DEFLATE in the ZLIB format (RFC 1950), highest compression, as the
/// Token Status List recommends.
fn zlib(bytes: &[u8]) -> Result<Vec<u8>, FormatError> {
    let mut encoder = ZlibEncoder::new(Vec::new(), Compression::best());
    encoder
        .write_all(bytes)
        .and_then(|()| encoder.finish())
        .map_err(|_| FormatError::StatusList("compression failed"))
}

/// GZIP (RFC 1952), highest compression, as the W3C bitstring uses it. The
/// header carries no name and no time, so equal lists give equal bytes.
fn gzip(bytes: &[u8]) -> Result<Vec<u8>, FormatError> {
    let mut encoder = GzEncoder::new(Vec::new(), Compression::best());
    encoder
        .write_all(bytes)
        .and_then(|()| encoder.finish())
        .map_err(|_| FormatError::StatusList("compression failed"))
}

/// Inflates a ZLIB stream, checking its checksum; see [`inflate`].
fn unzlib(compressed: &[u8]) -> Result<Vec<u8>, FormatError> {
    let mut decoder = ZlibDecoder::new(compressed);
    let bytes = inflate(&mut decoder)?;
    finished(decoder.into_inner(), bytes)
}

/// Inflates one GZIP member, checking its CRC and length; see [`inflate`].
fn gunzip(compressed: &[u8]) -> Result<Vec<u8>, FormatError> {
    let mut decoder = GzDecoder::new(compressed);
    let bytes = inflate(&mut decoder)?;
    finished(decoder.into_inner(), bytes)
}

/// Reads a decoder to its end, at most [`MAX_LIST_BYTES`].
fn inflate(decoder: &mut impl Read) -> Result<Vec<u8>, FormatError> {
    let mut bytes = Vec::new();
    decoder
        .take(MAX_LIST_BYTES as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(|_| FormatError::StatusList("the list is not validly compressed"))?;
    if bytes.len() > MAX_LIST_BYTES {
        return Err(FormatError::StatusList("the list is too long"));
    }
    Ok(bytes)
}

/// Refuses bytes after the compressed stream: a list is exactly one stream.
fn finished(rest: &[u8], bytes: Vec<u8>) -> Result<Vec<u8>, FormatError> {
    if rest.is_empty() {
        Ok(bytes)
    } else {
        Err(FormatError::StatusList(
            "the list has data after its compressed stream",
        ))
    }
}

#[cfg(test)]
mod tests;
