//! Bounded property tests of the dataset file parsers (idx, CIFAR-10 binary batches): arbitrary
//! bytes, headers with arbitrary dimensions, and valid files with bytes overwritten or cut short
//! return Ok or Err and never panic.
use std::path::Path;

use proptest::prelude::*;

use super::{cifar10, idx};

fn idx_file(magic: u32, dims: &[u32], payload: &[u8]) -> Vec<u8> {
    let mut v = magic.to_be_bytes().to_vec();
    dims.iter().for_each(|d| v.extend(d.to_be_bytes()));
    v.extend_from_slice(payload);
    v
}

/// A dimension that is mostly small, sometimes 0 or huge.
fn dim() -> impl Strategy<Value = u32> {
    prop_oneof![0u32..6, Just(0), Just(u32::MAX), any::<u32>()]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn idx_of_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
        let _ = idx::images_from_bytes(bytes);
    }

    #[test]
    fn idx_of_arbitrary_dimensions_never_panics(
        dims in proptest::collection::vec(dim(), 3),
        payload in proptest::collection::vec(any::<u8>(), 0..128),
    ) {
        let bytes = idx_file(0x0000_0803, &dims, &payload);
        if let Ok(t) = idx::images_from_bytes(bytes) {
            let d: Vec<i64> = dims.iter().map(|&d| d as i64).collect();
            prop_assert_eq!(t.size(), vec![d[0], 1, d[1], d[2]]);
            prop_assert_eq!(t.numel(), payload.len());
        }
    }

    #[test]
    fn idx_with_bytes_overwritten_or_cut_never_panics(
        edits in proptest::collection::vec((0usize..76, any::<u8>()), 1..4),
        len in 0usize..80,
    ) {
        let mut bytes = idx_file(0x0000_0803, &[3, 4, 5], &[7; 60]);
        for (i, v) in edits {
            bytes[i] = v;
        }
        bytes.truncate(len);
        let _ = idx::images_from_bytes(bytes);
    }

    #[test]
    fn cifar_batch_of_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..4096)) {
        prop_assert!(cifar10::parse_batch(Path::new("b.bin"), &bytes).is_err());
    }
}

proptest! {
    // Full-size (30 MB) batches: few cases.
    #![proptest_config(ProptestConfig::with_cases(8))]

    #[test]
    fn cifar_batch_with_a_label_overwritten_never_panics(record in 0usize..10_000, label in any::<u8>()) {
        let mut bytes = vec![0u8; cifar10::FILE_BYTES];
        bytes[record * cifar10::RECORD_BYTES] = label;
        let parsed = cifar10::parse_batch(Path::new("b.bin"), &bytes);
        prop_assert_eq!(parsed.is_ok(), label <= 9);
    }
}
