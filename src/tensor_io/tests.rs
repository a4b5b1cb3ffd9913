use super::*;
use tch::Device;

fn npy_bytes(t: &Tensor) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.npy");
    t.write_npy(&path).unwrap();
    std::fs::read(path).unwrap()
}

/// Replaces `from` (same length as `to`) in a file's bytes: a header that lies.
fn patch(bytes: &mut [u8], from: &[u8], to: &[u8]) {
    let at = bytes.windows(from.len()).position(|w| w == from).unwrap();
    bytes[at..at + to.len()].copy_from_slice(to);
}

#[test]
fn npy_npz_and_safetensors_round_trip_as_tch_writes_them() {
    let x = Tensor::arange(24, (Kind::Float, Device::Cpu)).reshape([2, 3, 4]);
    let b = Tensor::arange(5, (Kind::Int64, Device::Cpu));
    assert!(parse_npy(&npy_bytes(&x)).unwrap().equal(&x));
    assert!(parse_npy(&npy_bytes(&b)).unwrap().equal(&b));
    let scalar = Tensor::from(2.5f64);
    assert!(parse_npy(&npy_bytes(&scalar)).unwrap().equal(&scalar));

    let dir = tempfile::tempdir().unwrap();
    let npz = dir.path().join("s.npz");
    Tensor::write_npz(&[("mu", &x), ("n", &b)], &npz).unwrap();
    let read = read_npz(&npz).unwrap();
    assert_eq!(read.len(), 2);
    assert!(
        read.iter().any(|(k, t)| k == "mu" && t.equal(&x)),
        "{read:?}"
    );

    let st = dir.path().join("s.safetensors");
    Tensor::write_safetensors(&[("x", &x), ("b", &b)], &st).unwrap();
    let read = read_safetensors(&st).unwrap();
    assert_eq!(read[0].0, "b");
    assert!(read[0].1.equal(&b) && read[1].1.equal(&x));
}

#[test]
fn npy_whose_header_disagrees_with_its_data_is_refused() {
    let x = Tensor::zeros([3, 4, 4], (Kind::Float, Device::Cpu));
    let mut lying = npy_bytes(&x);
    patch(&mut lying, b"(3,4,4,", b"(3,9,9,");
    let err = format!("{:#}", parse_npy(&lying).unwrap_err());
    assert!(
        err.contains("[3, 9, 9]") && err.contains("972") && err.contains("192"),
        "{err}"
    );

    let mut short = npy_bytes(&x);
    short.truncate(short.len() - 1);
    let err = format!("{:#}", parse_npy(&short).unwrap_err());
    assert!(err.contains("truncated"), "{err}");

    let mut long = npy_bytes(&x);
    long.push(0);
    let err = format!("{:#}", parse_npy(&long).unwrap_err());
    assert!(err.contains("longer"), "{err}");

    // A shape whose byte count overflows, and one beyond libtorch's i64.
    for shape in ["(4294967296, 4294967296, 9)", "(18446744073709551615,)"] {
        let header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {shape}, }}");
        let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
        bytes.extend((header.len() as u16).to_le_bytes());
        bytes.extend(header.as_bytes());
        assert!(parse_npy(&bytes).is_err(), "{shape}");
    }
}

#[test]
fn npy_of_unsupported_layout_or_dtype_is_refused_by_name() {
    let x = Tensor::zeros([2, 2], (Kind::Float, Device::Cpu));
    let mut fortran = npy_bytes(&x);
    patch(&mut fortran, b"False", b"True ");
    let err = format!("{:#}", parse_npy(&fortran).unwrap_err());
    assert!(err.contains("Fortran"), "{err}");
    let mut big = npy_bytes(&x);
    patch(&mut big, b"'<f4'", b"'>f4'");
    let err = format!("{:#}", parse_npy(&big).unwrap_err());
    assert!(err.contains("little-endian"), "{err}");
    let err = format!("{:#}", parse_npy(b"PK\x03\x04 not npy").unwrap_err());
    assert!(err.contains("magic"), "{err}");
}

#[test]
fn read_errors_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    for name in ["bad.npy", "bad.npz", "bad.safetensors"] {
        let path = dir.path().join(name);
        std::fs::write(&path, b"garbage").unwrap();
        let err = match name {
            "bad.npy" => read_npy(&path).map(|_| ()).unwrap_err(),
            "bad.npz" => read_npz(&path).map(|_| ()).unwrap_err(),
            _ => read_safetensors(&path).map(|_| ()).unwrap_err(),
        };
        assert!(format!("{err:#}").contains(name), "{err:#}");
    }
}

#[test]
fn safetensors_with_a_dimension_beyond_i64_is_refused() {
    // 0 elements (so the crate's byte count checks out) but a dimension libtorch cannot hold.
    let header = format!(
        "{{\"x\":{{\"dtype\":\"F32\",\"shape\":[{},0],\"data_offsets\":[0,0]}}}}",
        u64::MAX
    );
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend(header.as_bytes());
    let err = format!("{:#}", parse_safetensors(&bytes).unwrap_err());
    assert!(err.contains("libtorch"), "{err}");
}
