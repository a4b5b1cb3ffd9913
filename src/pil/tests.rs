use super::*;
use crate::rng::Rng;
use crate::testing::{assert_close, oracle};

/// Random images of assorted shapes and target sizes: up- and downscaling, non-integer ratios,
/// one-axis-only resizes, and a high-contrast checkerboard that exercises clipping.
fn cases() -> Vec<(Tensor, [i64; 2])> {
    let mut rng = Rng::seeded(1234);
    let shapes: [([i64; 3], [i64; 2]); 8] = [
        ([1, 28, 28], [32, 32]),
        ([3, 32, 32], [16, 16]),
        ([3, 997, 999], [14, 14]),
        ([3, 37, 23], [11, 50]),
        ([1, 5, 7], [3, 2]),
        ([3, 64, 64], [64, 20]),
        ([1, 20, 20], [21, 20]),
        ([3, 512, 512], [20, 20]),
    ];
    let mut out: Vec<(Tensor, [i64; 2])> = shapes
        .iter()
        .map(|(s, size)| (rng.randint(256, s).to_kind(Kind::Uint8), *size))
        .collect();
    let checker = (Tensor::arange(24 * 24, (Kind::Int64, Device::Cpu))
        .reshape([1, 24, 24])
        .remainder(2)
        * 255)
        .to_kind(Kind::Uint8);
    out.push((checker.repeat([3, 1, 1]), [17, 9]));
    out
}

#[test]
fn resize_and_convert_match_pillow() {
    let cases = cases();
    let mut owned: Vec<(String, Tensor)> = Vec::new();
    for (k, (img, size)) in cases.iter().enumerate() {
        owned.push((format!("img_{k}"), img.shallow_clone()));
        owned.push((format!("size_{k}"), Tensor::from_slice(size)));
    }
    let inputs: Vec<(&str, &Tensor)> = owned.iter().map(|(n, t)| (n.as_str(), t)).collect();
    let out = oracle("pil_ops", &inputs, &[]);
    for (k, (img, size)) in cases.iter().enumerate() {
        let ours = resize_bilinear(
            &ImageU8::from_tensor(img).unwrap(),
            size[0] as usize,
            size[1] as usize,
        )
        .unwrap();
        let theirs = &out[&format!("resized_{k}")];
        assert!(
            ours.to_tensor().equal(theirs),
            "case {k}: resize {:?} → {:?} differs from Pillow (max diff {})",
            img.size(),
            size,
            crate::testing::max_abs_diff(&ours.to_tensor(), theirs)
        );
        // The whole ToTensor + normalize chain, against torchvision's transforms.
        assert_close(
            &format!("case {k}: normalized"),
            &to_normalized_tensor(&ours),
            &out[&format!("tv_{k}")],
            0.0,
        );
        if img.size()[0] == 3 {
            let l = convert_l(&ImageU8::from_tensor(img).unwrap()).unwrap();
            assert!(
                l.to_tensor().equal(&out[&format!("l_{k}")]),
                "case {k}: convert(\"L\") differs from Pillow"
            );
        }
    }
}

#[test]
fn resize_to_same_size_is_identity_and_bad_sizes_fail() {
    let img = ImageU8::new(1, 2, 3, vec![1, 2, 3, 4, 5, 6]).unwrap();
    assert_eq!(resize_bilinear(&img, 3, 2).unwrap(), img);
    assert!(resize_bilinear(&img, 0, 2).is_err());
    assert!(ImageU8::new(3, 2, 2, vec![0; 5]).is_err());
}

#[test]
fn rgb_conversion_drops_alpha_and_replicates_grey() {
    let rgba = ImageU8::new(4, 1, 2, vec![10, 20, 30, 40, 50, 60, 0, 255]).unwrap();
    assert_eq!(
        convert_rgb(&rgba).unwrap().data,
        vec![10, 20, 30, 40, 50, 60]
    );
    let l = ImageU8::new(1, 1, 2, vec![7, 9]).unwrap();
    assert_eq!(convert_rgb(&l).unwrap().data, vec![7, 9, 7, 9, 7, 9]);
}

#[test]
fn torchvision_int_resize_keeps_aspect() {
    // The stop-sign source is 999 wide, 997 high: shorter side (height) → n.
    assert_eq!(shorter_side_size(999, 997, 14), (14, 14));
    assert_eq!(shorter_side_size(100, 50, 10), (20, 10));
    assert_eq!(shorter_side_size(50, 101, 10), (10, 20));
}

#[test]
fn normalization_range_has_the_eps_quirk() {
    let t = normalize_u8(&Tensor::from_slice(&[0u8, 255]));
    assert_eq!(t.double_value(&[0]), -1.0);
    let top = t.double_value(&[1]);
    assert!((top - 0.99998).abs() < 1e-6, "255 maps to {top}");
}
