//! List indexes that say nothing about issue order: a keyed pseudo-random
//! permutation of `[0, size)`, so the `n`-th credential put on a list gets
//! index `index_of(n)`. Distinct counters give distinct indexes, so an
//! index is never reused while the caller only stores the counter.
//!
//! The permutation is a balanced Feistel network over the index bits with
//! HMAC-SHA256 round functions. A list whose size has an odd number of bits
//! is permuted inside the next even width and cycle-walked back into range:
//! the walk from an index in range meets another index in range before it
//! returns to its start, and takes two steps on average.
//!
//! The mapping is part of every list's history: changing the rounds, the
//! round input or the walk would hand out indexes already in use. The
//! known-answer test pins it.

use std::fmt;

use aws_lc_rs::hmac;

use crate::formats::FormatError;

/// Feistel rounds. Four give a strong pseudo-random permutation when the
/// halves are wide (Luby-Rackoff); the halves here are 9 to 32 bits, where
/// more rounds buy a margin for a few microseconds per index.
const ROUNDS: u8 = 8;

/// Domain separation for the round function's input.
const LABEL: &[u8] = b"notary status list index v1";

/// A keyed permutation of a list's indexes.
#[derive(Clone)]
pub struct IndexPermutation {
    key: hmac::Key,
    size: u64,
    /// log2(size), part of every round's input: lists of different sizes
    /// are permuted independently even under one key.
    width: u8,
    /// Bits per Feistel half; the network permutes `[0, 2^(2 * half))`.
    half: u32,
}

impl IndexPermutation {
    /// The smallest list the permutation serves: 2^17 = 131,072 entries,
    /// the W3C minimum and the herd notary promises for both formats.
    pub const MIN_SIZE: usize = 1 << 17;

    /// The permutation of `[0, size)` under `key`, 32 bytes the caller
    /// derives per list (in the HSM), so lists do not share an order.
    /// `size` must be a power of two of at least [`Self::MIN_SIZE`].
    pub fn new(key: &[u8; 32], size: usize) -> Result<Self, FormatError> {
        if !size.is_power_of_two() || size < Self::MIN_SIZE {
            return Err(FormatError::StatusList(
                "a list's size must be a power of two of at least 131,072",
            ));
        }
        let width = size.trailing_zeros();
        Ok(IndexPermutation {
            key: hmac::Key::new(hmac::HMAC_SHA256, key),
            size: size as u64,
            // At most 63: size is a power of two in a usize.
            width: width as u8,
            half: width.div_ceil(2),
        })
    }

    /// The index of the `n`-th entry; `None` when `n >= size`.
    pub fn index_of(&self, n: usize) -> Option<usize> {
        let n = u64::try_from(n).ok().filter(|n| *n < self.size)?;
        let mut index = self.feistel(n);
        // Terminates: the network is a permutation of a domain holding
        // [0, size), so the cycle through n comes back to n, which is in range.
        while index >= self.size {
            index = self.feistel(index);
        }
        usize::try_from(index).ok()
    }

    /// The list size.
    pub fn size(&self) -> usize {
        // Built from a usize in `new`.
        usize::try_from(self.size).unwrap_or(usize::MAX)
    }

    /// One pass of the network over `[0, 2^(2 * half))`.
    fn feistel(&self, x: u64) -> u64 {
        let mask = (1u64 << self.half) - 1;
        let (mut left, mut right) = (x >> self.half, x & mask);
        for round in 0..ROUNDS {
            let next = left ^ (self.round(round, right) & mask);
            left = right;
            right = next;
        }
        (left << self.half) | right
    }

    /// The round function: the first 8 bytes of
    /// HMAC-SHA256(key, label || width || round || value), value as 8
    /// bytes big-endian.
    fn round(&self, round: u8, value: u64) -> u64 {
        let mut message = Vec::with_capacity(LABEL.len() + 10);
        message.extend_from_slice(LABEL);
        message.push(self.width);
        message.push(round);
        message.extend_from_slice(&value.to_be_bytes());
        let tag = hmac::sign(&self.key, &message);
        tag.as_ref()
            .iter()
            .take(8)
            .fold(0, |acc, byte| (acc << 8) | u64::from(*byte))
    }
}

impl fmt::Debug for IndexPermutation {
    /// The size only; the key stays out of logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IndexPermutation")
            .field("size", &self.size)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    const MIN_SIZE: usize = IndexPermutation::MIN_SIZE;

    const KEY: [u8; 32] = [7; 32];

    /// Every index in `0..size` exactly once, checked with a bitset.
    fn assert_permutation(permutation: &IndexPermutation) {
        let size = permutation.size();
        let mut seen = vec![0u64; size / 64];
        for n in 0..size {
            let index = permutation.index_of(n).unwrap();
            assert!(index < size, "index {index} of counter {n} out of range");
            let (word, bit) = (index / 64, 1u64 << (index % 64));
            assert_eq!(seen[word] & bit, 0, "index {index} given twice");
            seen[word] |= bit;
        }
        assert!(seen.iter().all(|word| *word == u64::MAX));
        assert_eq!(permutation.index_of(size), None);
        assert_eq!(permutation.index_of(usize::MAX), None);
    }

    #[test]
    fn every_counter_gets_a_distinct_index_in_range_odd_width() {
        // 17 bits: permuted in 18 and cycle-walked back.
        assert_permutation(&IndexPermutation::new(&KEY, 1 << 17).unwrap());
    }

    #[test]
    fn every_counter_gets_a_distinct_index_in_range_even_width() {
        assert_permutation(&IndexPermutation::new(&KEY, 1 << 18).unwrap());
    }

    #[test]
    fn indexes_do_not_follow_the_counter() {
        let permutation = IndexPermutation::new(&KEY, MIN_SIZE).unwrap();
        let first: Vec<usize> = (0..100).map(|n| permutation.index_of(n).unwrap()).collect();
        let rising = first.windows(2).filter(|pair| pair[0] < pair[1]).count();
        assert!(
            (25..=75).contains(&rising),
            "{rising} of 99 steps rise: the order leaks"
        );
        let adjacent = first
            .windows(2)
            .filter(|pair| pair[0].abs_diff(pair[1]) <= 1)
            .count();
        assert_eq!(adjacent, 0, "consecutive counters gave adjacent indexes");
        // Spread over the list: each quarter gets a share of the first 1000.
        let mut quarters = [0; 4];
        for n in 0..1000 {
            quarters[permutation.index_of(n).unwrap() * 4 / MIN_SIZE] += 1;
        }
        assert!(
            quarters.iter().all(|q| (180..=320).contains(q)),
            "{quarters:?}"
        );
    }

    #[test]
    fn keys_and_sizes_give_different_orders_and_a_key_the_same_one() {
        let sequence = |key: &[u8; 32], size: usize| -> Vec<usize> {
            let permutation = IndexPermutation::new(key, size).unwrap();
            (0..64).map(|n| permutation.index_of(n).unwrap()).collect()
        };
        let mut other = KEY;
        other[31] ^= 1;
        let base = sequence(&KEY, MIN_SIZE);
        assert_eq!(base, sequence(&KEY, MIN_SIZE));
        let flipped = sequence(&other, MIN_SIZE);
        let same = base.iter().zip(&flipped).filter(|(a, b)| a == b).count();
        assert!(same <= 2, "{same} of 64 indexes equal under another key");
        let distinct: HashSet<usize> = base.iter().copied().collect();
        assert_eq!(distinct.len(), 64);
        assert_ne!(base, sequence(&KEY, MIN_SIZE * 2));
    }

    #[test]
    fn the_mapping_matches_an_independent_reference_and_stays_pinned() {
        // Indexes already handed out depend on it: a change here reuses them.
        // Values from a separate Python implementation of the module doc's
        // construction (hmac/hashlib): counters 0, 1, 2, 3 and size - 1.
        let counting: [u8; 32] = std::array::from_fn(|i| i as u8);
        for (key, size, expected) in [
            ([0; 32], 1 << 17, [13259, 10911, 109377, 86934, 10258]),
            (counting, 1 << 17, [20655, 100234, 69495, 7434, 22703]),
            (counting, 1 << 18, [81950, 109651, 105953, 130154, 40722]),
        ] {
            let permutation = IndexPermutation::new(&key, size).unwrap();
            let got = [0, 1, 2, 3, size - 1].map(|n| permutation.index_of(n).unwrap());
            assert_eq!(got, expected, "size {size}");
        }
    }

    #[test]
    fn sizes_that_are_not_powers_of_two_or_too_small_are_refused() {
        for size in [0, 1, 1 << 16, (1 << 17) - 1, (1 << 17) + 1, 3 << 17] {
            assert!(
                matches!(
                    IndexPermutation::new(&KEY, size),
                    Err(FormatError::StatusList(_))
                ),
                "size {size}"
            );
        }
        assert!(IndexPermutation::new(&KEY, 1 << 30).is_ok());
    }

    #[test]
    fn debug_does_not_show_the_key() {
        let shown = format!(
            "{:?}",
            IndexPermutation::new(&[0xAB; 32], MIN_SIZE).unwrap()
        );
        assert!(!shown.to_lowercase().contains("ab, ") && !shown.contains("171"));
        assert!(shown.contains("131072"));
    }
}
