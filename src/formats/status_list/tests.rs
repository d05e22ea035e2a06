use super::*;

#[test]
fn widths_other_than_1_2_4_8_and_empty_or_huge_lists_are_refused() {
    for bits in [0, 3, 5, 6, 7, 9, 16, 255] {
        assert!(
            matches!(StatusBits::new(bits, 16), Err(FormatError::StatusList(_))),
            "bits {bits}"
        );
        assert!(
            StatusBits::from_bytes(bits, vec![0; 2]).is_err(),
            "bits {bits}"
        );
    }
    assert!(StatusBits::new(1, 0).is_err());
    assert!(StatusBits::from_bytes(1, Vec::new()).is_err());
    assert!(StatusBits::new(8, MAX_LIST_BYTES + 1).is_err());
    assert!(StatusBits::new(8, usize::MAX).is_err());
    assert!(StatusBits::new(1, MAX_LIST_BYTES * 8).is_ok());
    assert!(StatusBits::from_bytes(1, vec![0; MAX_LIST_BYTES + 1]).is_err());
}

#[test]
fn every_width_stores_every_value_without_touching_its_neighbours() {
    for bits in [1u8, 2, 4, 8] {
        let len = 37;
        let mut list = StatusBits::new(bits, len).unwrap();
        assert_eq!(list.as_bytes().len(), (len * usize::from(bits)).div_ceil(8));
        assert_eq!(
            (list.bits(), list.len(), list.is_empty()),
            (bits, len, false)
        );
        let top = (1u16 << bits) - 1;
        let value = |index: usize| ((index * 7 + 3) % (usize::from(top) + 1)) as u8;
        for index in 0..len {
            list.set(index, value(index)).unwrap();
        }
        for index in 0..len {
            assert_eq!(
                list.get(index),
                Some(value(index)),
                "bits {bits} index {index}"
            );
        }
        // Overwrite one entry with its extremes; the others keep theirs.
        for new in [0, top as u8, 0] {
            list.set(11, new).unwrap();
            assert_eq!(list.get(11), Some(new));
            for index in (0..len).filter(|index| *index != 11) {
                assert_eq!(list.get(index), Some(value(index)));
            }
        }
        assert_eq!(list.get(len), None);
    }
}

#[test]
fn a_value_wider_than_the_bits_or_an_index_past_the_end_is_refused() {
    for (bits, too_big) in [(1u8, 2u8), (2, 4), (4, 16)] {
        let mut list = StatusBits::new(bits, 8).unwrap();
        let before = list.clone();
        assert_eq!(
            list.set(0, too_big),
            Err(FormatError::StatusList(
                "the status does not fit in the list's bits"
            ))
        );
        assert!(list.set(0, u8::MAX).is_err());
        assert_eq!(list, before, "a refused set changes nothing");
    }
    let mut eight = StatusBits::new(8, 8).unwrap();
    assert!(eight.set(7, u8::MAX).is_ok());
    assert_eq!(
        eight.set(8, 0),
        Err(FormatError::StatusList("the index is outside the list"))
    );
    // Indexes between len and the end of the last byte are outside too.
    let mut odd = StatusBits::new(1, 10).unwrap();
    assert!(odd.set(10, 1).is_err());
    assert_eq!(odd.get(15), None);
    assert!(odd.set(usize::MAX, 1).is_err());
}

#[test]
fn from_bytes_reads_the_draft_layout() {
    let list = StatusBits::from_bytes(2, vec![0xC9, 0x44, 0xF9]).unwrap();
    assert_eq!(list.len(), 12);
    let statuses: Vec<u8> = (0..12).map(|i| list.get(i).unwrap()).collect();
    assert_eq!(statuses, [1, 2, 0, 3, 0, 1, 0, 1, 1, 2, 3, 3]);
}

#[test]
fn debug_shows_the_shape_not_the_statuses() {
    let mut list = StatusBits::new(8, 4).unwrap();
    list.set(2, 0xAB).unwrap();
    let shown = format!("{list:?}");
    assert!(shown.contains("bits: 8") && shown.contains("len: 4"));
    assert!(!shown.contains("171"));
}

#[test]
fn compression_round_trips_and_refuses_bombs_garbage_and_trailing_data() {
    let bytes: Vec<u8> = (0..5000u32).map(|i| (i % 251) as u8).collect();
    assert_eq!(unzlib(&zlib(&bytes).unwrap()).unwrap(), bytes);
    assert_eq!(gunzip(&gzip(&bytes).unwrap()).unwrap(), bytes);

    let zeros = vec![0; MAX_LIST_BYTES + 1];
    let bomb = zlib(&zeros).unwrap();
    assert!(bomb.len() < 64 * 1024);
    assert_eq!(
        unzlib(&bomb),
        Err(FormatError::StatusList("the list is too long"))
    );
    assert!(gunzip(&gzip(&zeros).unwrap()).is_err());
    assert!(unzlib(&zlib(&zeros[..MAX_LIST_BYTES]).unwrap()).is_ok());

    let mut trailing = zlib(&bytes).unwrap();
    trailing.push(0);
    assert!(unzlib(&trailing).is_err());
    let mut trailing = gzip(&bytes).unwrap();
    trailing.extend(gzip(&bytes).unwrap());
    assert!(gunzip(&trailing).is_err(), "a second GZIP member");

    // A flipped bit in the payload fails the checksum (or the stream).
    for (compressed, inflate) in [
        (
            zlib(&bytes).unwrap(),
            unzlib as fn(&[u8]) -> Result<Vec<u8>, FormatError>,
        ),
        (
            gzip(&bytes).unwrap(),
            gunzip as fn(&[u8]) -> Result<Vec<u8>, FormatError>,
        ),
    ] {
        let mut corrupt = compressed.clone();
        let last = corrupt.len() - 1;
        corrupt[last] ^= 1;
        assert!(inflate(&corrupt).is_err());
        assert!(inflate(&compressed[..compressed.len() / 2]).is_err());
        assert!(inflate(b"not compressed").is_err());
    }
    assert!(unzlib(&gzip(&bytes).unwrap()).is_err(), "GZIP is not ZLIB");
    assert!(gunzip(&zlib(&bytes).unwrap()).is_err(), "ZLIB is not GZIP");
}
