use super::*;
use crate::rng::Rng;

/// pool3 features of 4 CIFAR-sized images against pytorch-fid's InceptionV3 with the same
/// seeded random weights. The whole network runs, so the FID-specific blocks (A and C with
/// count_include_pad=False, E_1 likewise, E_2 with its max pool) all shape the result.
#[test]
fn pool3_matches_pytorch_fid() {
    let images = Rng::seeded(41).rand(&[4, 3, 32, 32]);
    let dir = tempfile::tempdir().unwrap();
    let weights = dir.path().join("inception.safetensors");
    let out = crate::testing::oracle(
        "fid_inception",
        &[("images", &images)],
        &["7", weights.to_str().unwrap()],
    );
    let net = FidInceptionV3::from_safetensors(&weights, Device::Cpu).unwrap();
    let ours = net.pool3(&images);
    let theirs = &out["features"];
    assert_eq!(ours.size(), [4, POOL3_DIM]);
    let scale = theirs.abs().max().double_value(&[]);
    assert!(scale > 1e-3, "degenerate features (max {scale})");
    let rel = crate::testing::max_abs_diff(&ours, theirs) / scale;
    eprintln!("pool3 max relative difference to pytorch-fid: {rel:e}");
    assert!(
        rel <= 1e-4,
        "pool3 features differ from pytorch-fid: max relative difference {rel:e}"
    );
    assert_eq!(
        net.weights().unwrap().sha256,
        crate::metrics::sha256_hex(&std::fs::read(&weights).unwrap())
    );
}

#[test]
fn wrong_weights_files_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let pth = dir.path().join("pt_inception.pth");
    std::fs::write(&pth, b"pickle").unwrap();
    let err = FidInceptionV3::from_safetensors(&pth, Device::Cpu)
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("pt_inception.pth") && err.contains("convert_pth.py"),
        "{err}"
    );

    let garbage = dir.path().join("garbage.safetensors");
    std::fs::write(&garbage, b"\x08\0\0\0\0\0\0\0{}").unwrap();
    let err = format!(
        "{:#}",
        FidInceptionV3::from_safetensors(&garbage, Device::Cpu)
            .err()
            .unwrap()
    );
    assert!(err.contains("garbage.safetensors"), "{err}");

    let other = dir.path().join("other.safetensors");
    let w = Tensor::zeros([32, 3, 3, 3], (Kind::Float, Device::Cpu));
    let odd = Tensor::zeros([3], (Kind::Float, Device::Cpu));
    Tensor::write_safetensors(
        &[
            ("Conv2d_1a_3x3.conv.weight", &w),
            ("Conv2d_2a_3x3.bn.bias", &odd),
            ("unet.x", &odd),
        ],
        &other,
    )
    .unwrap();
    let err = FidInceptionV3::from_safetensors(&other, Device::Cpu)
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("other.safetensors") && err.contains("1 unexpected [unet.x]"),
        "{err}"
    );
    assert!(
        err.contains("1 wrongly shaped [Conv2d_2a_3x3.bn.bias"),
        "{err}"
    );
    assert!(err.contains("missing [Conv2d_1a_3x3.bn.bias"), "{err}");
}

/// Channels-last activations (a speed option) give the standard layout's features up to rounding.
#[test]
fn channels_last_features_match() {
    let mut rng = Rng::seeded(43);
    let mut net = FidInceptionV3::new(Device::Cpu);
    net.randomize(&mut rng);
    let images = rng.rand(&[2, 3, 32, 32]);
    drop(rng);
    net.set_channels_last(false);
    let plain = net.pool3(&images);
    net.set_channels_last(true);
    let cl = net.pool3(&images);
    let scale = plain.abs().max().double_value(&[]);
    assert!(scale > 1e-3, "degenerate features (max {scale})");
    let rel = crate::testing::max_abs_diff(&plain, &cl) / scale;
    assert!(rel <= 1e-5, "channels-last features differ by {rel:e}");
}
