//! Unguessable values from the operating system's CSPRNG: codes, PINs, ids.

use zeroize::Zeroizing;

use crate::jose::b64url;
use crate::oid4vci::offer::InputMode;

/// The OS random source failed; nothing secret can be made safely.
#[derive(Debug, thiserror::Error)]
#[error("the operating system's random source failed: {0}")]
pub struct RandomError(String);

/// Fills `buf` from the OS CSPRNG.
pub fn fill(buf: &mut [u8]) -> Result<(), RandomError> {
    getrandom::fill(buf).map_err(|e| RandomError(e.to_string()))
}

/// `n` random bytes, base64url: 32 bytes give a 256-bit, 43-character code.
pub fn token(n: usize) -> Result<String, RandomError> {
    let mut bytes = Zeroizing::new(vec![0u8; n]);
    fill(&mut bytes)?;
    Ok(b64url(&bytes))
}

/// A unique identifier that sorts roughly by time: the milliseconds since
/// the Unix epoch (6 bytes, big-endian) then 10 random bytes (80 bits),
/// base64url (22 characters). For values that are indexed, not secret (a
/// token's `jti`): identifiers made close in time are close in the index,
/// so a commit of many of them changes a few index pages, not one each.
/// Leaks only the time of issue, which the token states anyway (`iat`).
pub fn time_ordered_id(now: std::time::SystemTime) -> Result<String, RandomError> {
    let millis = now
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    let mut bytes = [0u8; 16];
    bytes[..6].copy_from_slice(&millis.to_be_bytes()[2..]);
    fill(&mut bytes[6..])?;
    Ok(b64url(&bytes))
}

/// PIN alphabet for `text` input: upper-case letters and digits without the
/// look-alikes 0/O and 1/I.
const TEXT_ALPHABET: &[u8] = b"23456789ABCDEFGHJKLMNPQRSTUVWXYZ";
const DIGITS: &[u8] = b"0123456789";

/// A PIN of `length` characters, each uniform over the alphabet for `mode`.
/// Uses rejection sampling: bytes at or above the largest multiple of the
/// alphabet size are thrown away, so there is no modulo bias.
pub fn pin(length: u32, mode: InputMode) -> Result<Zeroizing<String>, RandomError> {
    let alphabet = match mode {
        InputMode::Numeric => DIGITS,
        InputMode::Text => TEXT_ALPHABET,
    };
    let n = alphabet.len();
    let limit = 256 - (256 % n);
    let mut out = Zeroizing::new(String::with_capacity(length as usize));
    let mut pool = Zeroizing::new([0u8; 64]);
    while out.len() < length as usize {
        fill(pool.as_mut())?;
        for &b in pool.iter() {
            if usize::from(b) < limit && out.len() < length as usize {
                out.push(char::from(alphabet[usize::from(b) % n]));
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_long_and_distinct() {
        let a = token(32).unwrap();
        let b = token(32).unwrap();
        assert_eq!(a.len(), 43);
        assert_ne!(a, b);
    }

    #[test]
    fn time_ordered_ids_share_their_time_prefix_and_differ_after_it() {
        let at = std::time::UNIX_EPOCH + std::time::Duration::from_millis(1_764_892_800_123);
        let a = time_ordered_id(at).unwrap();
        let b = time_ordered_id(at).unwrap();
        assert_eq!(a.len(), 22);
        // 6 bytes of time are the first 8 characters.
        assert_eq!(a[..8], b[..8]);
        assert_ne!(a, b, "80 random bits follow the time");
        let later = time_ordered_id(at + std::time::Duration::from_secs(3_600)).unwrap();
        assert_ne!(a[..8], later[..8]);
        assert_eq!(
            a[..3],
            later[..3],
            "an hour apart, the leading characters still agree"
        );
    }

    #[test]
    fn pins_have_the_asked_shape() {
        for _ in 0..50 {
            let p = pin(6, InputMode::Numeric).unwrap();
            assert_eq!(p.len(), 6);
            assert!(p.bytes().all(|b| b.is_ascii_digit()));
            let t = pin(8, InputMode::Text).unwrap();
            assert!(t.bytes().all(|b| TEXT_ALPHABET.contains(&b)));
        }
    }

    #[test]
    fn pin_digits_are_roughly_uniform() {
        // 60,000 digits: each count should be near 6,000. A modulo-biased
        // generator over bytes would put digits 0-5 at ~6,100 and 6-9 at
        // ~5,850; the bound here catches gross errors, not that bias.
        let mut counts = [0u32; 10];
        for _ in 0..10_000 {
            for b in pin(6, InputMode::Numeric).unwrap().bytes() {
                counts[usize::from(b - b'0')] += 1;
            }
        }
        for c in counts {
            assert!((5_500..6_500).contains(&c), "digit counts {counts:?}");
        }
    }
}
