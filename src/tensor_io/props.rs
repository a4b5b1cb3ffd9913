//! Bounded property tests of the tensor-file parsers: arbitrary bytes, and valid files with
//! bytes overwritten or cut short, return Ok or Err and never panic or read past the data.
use super::*;
use proptest::prelude::*;
use tch::Device;

fn valid_npy() -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.npy");
    Tensor::arange(12, (Kind::Float, Device::Cpu))
        .reshape([3, 4])
        .write_npy(&path)
        .unwrap();
    std::fs::read(path).unwrap()
}

fn valid_safetensors() -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.safetensors");
    let x = Tensor::arange(12, (Kind::Float, Device::Cpu)).reshape([3, 4]);
    let y = Tensor::arange(3, (Kind::Int64, Device::Cpu));
    Tensor::write_safetensors(&[("x", &x), ("y", &y)], &path).unwrap();
    std::fs::read(path).unwrap()
}

/// `base` with some bytes overwritten and possibly cut short.
fn mutated(base: Vec<u8>) -> impl Strategy<Value = Vec<u8>> {
    let n = base.len();
    (
        proptest::collection::vec((0..n, any::<u8>()), 1..6),
        0..=n + 4,
    )
        .prop_map(move |(edits, len)| {
            let mut b = base.clone();
            for (i, v) in edits {
                b[i] = v;
            }
            b.resize(len, 0);
            b
        })
}

/// Whatever parses holds exactly the data its shape says.
fn consistent(t: &Tensor, data_len: usize) -> bool {
    t.numel() * t.kind().elt_size_in_bytes() <= data_len
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let _ = parse_npy(&bytes);
        let _ = parse_safetensors(&bytes);
    }

    #[test]
    fn mutated_npy_never_panics(bytes in mutated(valid_npy())) {
        if let Ok(t) = parse_npy(&bytes) {
            prop_assert!(consistent(&t, bytes.len()));
        }
    }

    #[test]
    fn npy_headers_of_arbitrary_text_never_panic(header in "\\{[ -~]{0,80}\\}") {
        let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
        bytes.extend((header.len() as u16).to_le_bytes());
        bytes.extend(header.as_bytes());
        bytes.extend([0u8; 64]);
        let _ = parse_npy(&bytes);
    }

    #[test]
    fn mutated_safetensors_never_panics(bytes in mutated(valid_safetensors())) {
        if let Ok(all) = parse_safetensors(&bytes) {
            for (_, t) in &all {
                prop_assert!(consistent(t, bytes.len()));
            }
        }
    }
}
