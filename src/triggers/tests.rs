use super::*;
use crate::testing::{assert_close, oracle, shared_assets};

fn sources() -> SourceImages {
    SourceImages::new(shared_assets().join("static"))
}

fn npy(name: &str) -> Tensor {
    let p = shared_assets().join(format!("{name}.npy"));
    Tensor::read_npy(&p).unwrap_or_else(|e| panic!("reading {}: {e}", p.display()))
}

fn rgb(size: usize) -> ImageShape {
    ImageShape::new(3, size).unwrap()
}

#[test]
fn triggers_equal_the_official_tensors() {
    let src = sources();
    for trig in Trigger::all().into_iter().filter(|t| *t != Trigger::None) {
        let ours = trig.build(rgb(32), &src).unwrap();
        assert_close(
            &format!("trigger {trig} at 32 px"),
            &ours,
            &npy(&format!("trigger_{trig}_32")),
            1e-6,
        );
    }
    let ours = Trigger::Glasses.build(rgb(256), &src).unwrap();
    assert_close(
        "trigger GLASSES at 256 px",
        &ours,
        &npy("trigger_GLASSES_256"),
        1e-6,
    );
    let none = Trigger::None
        .build(ImageShape::new(1, 16).unwrap(), &src)
        .unwrap();
    assert_eq!(none.size(), [1, 16, 16]);
    assert!(none.eq(-1.0).all().int64_value(&[]) == 1);
}

#[test]
fn targets_equal_the_official_tensors() {
    let src = sources();
    for trig in TRIGGER_SIZES
        .iter()
        .flat_map(|&n| [Trigger::Box(n), Trigger::StopSign(n)])
    {
        let g = trig.build(rgb(32), &src).unwrap();
        for (target, name) in [(Target::NoShift, "TRIGGER"), (Target::Shift, "SHIFT")] {
            let ours = target.build(&g, &src).unwrap();
            assert_close(
                &format!("{name} for {trig}"),
                &ours,
                &npy(&format!("target_{name}_for_{trig}_32")),
                1e-6,
            );
        }
    }
    let g32 = Trigger::Box(14).build(rgb(32), &src).unwrap();
    for (target, name) in [
        (Target::Corner, "CORNER_32"),
        (Target::Hat, "HAT_32"),
        (Target::Cat, "CAT_32"),
    ] {
        assert_close(
            name,
            &target.build(&g32, &src).unwrap(),
            &npy(&format!("target_{name}")),
            1e-6,
        );
    }
    let g256 = Trigger::Glasses.build(rgb(256), &src).unwrap();
    assert_close(
        "CAT_256",
        &Target::Cat.build(&g256, &src).unwrap(),
        &npy("target_CAT_256"),
        1e-6,
    );
}

/// SHOE is checked against Fashion-MNIST itself: the oracle reads the raw idx file and runs the
/// official torchvision chain on train[0].
#[test]
fn shoe_matches_fashion_mnist_through_torchvision() {
    let src = sources();
    let dir = src.fashion_mnist_dir.to_str().unwrap().to_string();
    let shapes = [
        rgb(32),
        ImageShape::new(1, 16).unwrap(),
        ImageShape::new(1, 28).unwrap(),
        rgb(64),
    ];
    let args: Vec<String> = shapes
        .iter()
        .map(|s| format!("shoe:{dir}:{}:{}", s.channels, s.size))
        .collect();
    let argv: Vec<&str> = args.iter().map(|s| s.as_str()).collect();
    let out = oracle("backdoor_images", &[], &argv);
    for (k, shape) in shapes.iter().enumerate() {
        let g = Trigger::None.build(*shape, &src).unwrap();
        let ours = Target::Shoe.build(&g, &src).unwrap();
        assert_close(
            &format!("SHOE at {shape:?}"),
            &ours,
            &out[&format!("out_{k}")],
            1e-6,
        );
    }
}

/// Grayscale variants and scaled sizes have no shipped tensors: compare with the official
/// torchvision chain run on the same geometry.
#[test]
fn grayscale_and_scaled_variants_match_torchvision() {
    let src = sources();
    let stop = src.dir.join(STOP_SIGN_IMAGE.file);
    let glasses = src.dir.join(GLASSES_IMAGE.file);
    let (hat, cat) = (src.dir.join(HAT_IMAGE.file), src.dir.join(CAT_IMAGE.file));
    // (what we build, the oracle's spec of the same thing)
    let cases: Vec<(Box<dyn Fn() -> Tensor>, String)> = vec![
        (
            Box::new(|| {
                Trigger::StopSign(14)
                    .build(ImageShape::new(1, 32).unwrap(), &src)
                    .unwrap()
            }),
            format!("trigger:{}:1:32:14:16:16", stop.display()),
        ),
        (
            // 16 px: 14 → 7 px, margin 2 → 1 px, so the top-left corner sits at 16 − 7 − 1 = 8.
            Box::new(|| Trigger::StopSign(14).build(rgb(16), &src).unwrap()),
            format!("trigger:{}:3:16:7:8:8", stop.display()),
        ),
        (
            Box::new(|| {
                Trigger::StopSign(11)
                    .build(ImageShape::new(1, 16).unwrap(), &src)
                    .unwrap()
            }),
            format!("trigger:{}:1:16:6:9:9", stop.display()),
        ),
        (
            Box::new(|| {
                Trigger::Glasses
                    .build(ImageShape::new(1, 64).unwrap(), &src)
                    .unwrap()
            }),
            format!("trigger:{}:1:64:40:12:12", glasses.display()),
        ),
        (
            Box::new(|| {
                Target::Hat
                    .build(
                        &Trigger::None
                            .build(ImageShape::new(1, 16).unwrap(), &src)
                            .unwrap(),
                        &src,
                    )
                    .unwrap()
            }),
            format!("target:{}:1:16", hat.display()),
        ),
        (
            Box::new(|| {
                Target::Cat
                    .build(&Trigger::None.build(rgb(64), &src).unwrap(), &src)
                    .unwrap()
            }),
            format!("target:{}:3:64", cat.display()),
        ),
    ];
    let argv: Vec<&str> = cases.iter().map(|(_, s)| s.as_str()).collect();
    let out = oracle("backdoor_images", &[], &argv);
    for (k, (build, spec)) in cases.iter().enumerate() {
        assert_close(spec, &build(), &out[&format!("out_{k}")], 1e-6);
    }
}

#[test]
fn small_images_scale_the_official_geometry() {
    let src = sources();
    let s16 = ImageShape::new(1, 16).unwrap();
    let g = Trigger::Box(14).build(s16, &src).unwrap();
    // 7×7 grey square ending 1 px from the bottom-right edges.
    assert_eq!(g.ne(VMIN).sum(Kind::Int64).int64_value(&[]), 49);
    assert_eq!(g.double_value(&[0, 8, 8]), 0.0);
    assert_eq!(g.double_value(&[0, 14, 14]), 0.0);
    assert_eq!(g.double_value(&[0, 15, 15]), VMIN);
    let corner = Target::Corner.build(&g, &src).unwrap();
    assert_eq!(
        corner.eq(0.0).sum(Kind::Int64).int64_value(&[]),
        25,
        "10 px corner → 5 px"
    );
    // Shift (−3, −5) → (−2, −3) at 16 px (half away from zero), with wrap-around.
    let shifted = Target::Shift.build(&g, &src).unwrap();
    assert!(shifted.equal(&bg2grey(&g.roll([-2, -3], [1, 2]))));
    // At 32 px and above nothing is scaled (the official code does not scale at 256 either).
    assert_eq!(rgb(256).scaled(14), 14);
    assert_eq!(rgb(32).scaled(-3), -3);
    assert_eq!(rgb(8).scaled(2), 1);
    assert_eq!(rgb(8).scaled(-3), -1);
}

#[test]
fn names_parse_in_all_spellings() {
    let cases = [
        ("BOX_14", Trigger::Box(14)),
        ("grey-box", Trigger::Box(14)),
        ("Grey Box", Trigger::Box(14)),
        ("SM_BOX_MED", Trigger::Box(14)),
        ("BIG_BOX_MED", Trigger::Box(18)),
        ("XXXSM_BOX_MED", Trigger::Box(4)),
        ("box_8", Trigger::Box(8)),
        ("stop-sign", Trigger::StopSign(14)),
        ("STOP_SIGN_11", Trigger::StopSign(11)),
        ("XSM_STOP_SIGN", Trigger::StopSign(11)),
        ("eyeglasses", Trigger::Glasses),
        ("GLASSES", Trigger::Glasses),
        ("none", Trigger::None),
    ];
    for (name, t) in cases {
        assert_eq!(name.parse::<Trigger>().unwrap(), t, "{name}");
    }
    for t in Trigger::all() {
        assert_eq!(t.to_string().parse::<Trigger>().unwrap(), t);
    }
    let targets = [
        ("TRIGGER", Target::NoShift),
        ("NoShift", Target::NoShift),
        ("shift", Target::Shift),
        ("CORNER", Target::Corner),
        ("BOX", Target::Corner),
        ("Shoe", Target::Shoe),
        ("FASHION", Target::Shoe),
        ("fedora-hat", Target::Hat),
        ("CAT", Target::Cat),
    ];
    for (name, t) in targets {
        assert_eq!(name.parse::<Target>().unwrap(), t, "{name}");
    }
    for t in Target::all() {
        assert_eq!(t.to_string().parse::<Target>().unwrap(), t);
    }
}

#[test]
fn unknown_names_list_the_known_ones() {
    // SM_BOX is the official code's *white* box, not the paper's grey box: refused, not guessed.
    for bad in ["SM_BOX", "BOX_15", "STOP_SIGN_0", "glases", ""] {
        let err = bad.parse::<Trigger>().unwrap_err().to_string();
        assert!(
            err.contains("unknown trigger") && err.contains("STOP_SIGN_{4,8,11,14,18}"),
            "{err}"
        );
    }
    let err = "hats".parse::<Target>().unwrap_err().to_string();
    assert!(
        err.contains("unknown target") && err.contains("SHIFT") && err.contains("CAT"),
        "{err}"
    );
}

#[test]
fn a_tampered_source_image_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut bytes = std::fs::read(shared_assets().join("static").join(HAT_IMAGE.file)).unwrap();
    let last = bytes.len() - 20;
    bytes[last] ^= 1;
    std::fs::write(dir.path().join(HAT_IMAGE.file), &bytes).unwrap();
    let src = SourceImages::new(dir.path());
    let g = Trigger::None.build(rgb(32), &src).unwrap();
    let err = format!("{:#}", Target::Hat.build(&g, &src).unwrap_err());
    assert!(
        err.contains(HAT_IMAGE.sha256) && err.contains("fedora-hat.png"),
        "{err}"
    );
    let err = format!(
        "{:#}",
        Trigger::StopSign(14).build(rgb(32), &src).unwrap_err()
    );
    assert!(err.contains("stop_sign_wo_bg.png"), "{err}");
}

#[test]
fn stamping_is_element_wise_per_channel() {
    // A "red" trigger pixel (0.8, −1, −1) replaces only the red channel of the clean pixel.
    let g = Tensor::full([3, 2, 2], VMIN, (Kind::Float, Device::Cpu));
    let _ = g.get(0).get(0).get(0).fill_(0.8);
    let x = Tensor::full([2, 3, 2, 2], 0.25, (Kind::Float, Device::Cpu));
    let r = stamp(&x, &g).unwrap();
    assert_eq!(r.double_value(&[1, 0, 0, 0]), 0.800000011920929);
    assert_eq!(r.double_value(&[1, 1, 0, 0]), 0.25);
    assert_eq!(r.double_value(&[1, 2, 0, 0]), 0.25);
    assert_eq!(
        r.ne(0.25).sum(Kind::Int64).int64_value(&[]),
        2,
        "one element per image changes"
    );
    // Formula check on random images against the official M⊙x + (1−M)⊙g.
    let src = sources();
    let g = Trigger::StopSign(14).build(rgb(32), &src).unwrap();
    let x = crate::rng::Rng::seeded(3).rand(&[4, 3, 32, 32]) * 2.0 - 1.0;
    let m = g.gt(VMIN).logical_not().to_kind(Kind::Float);
    let expect = &m * &x + (1.0 - &m) * &g;
    assert_close("stamp", &stamp(&x, &g).unwrap(), &expect, 0.0);
    let err = stamp(&x, &Trigger::Box(4).build(rgb(16), &src).unwrap())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("[3, 16, 16]") && err.contains("[4, 3, 32, 32]"),
        "{err}"
    );
    let err = stamp(
        &x,
        &Trigger::Box(4)
            .build(ImageShape::new(1, 32).unwrap(), &src)
            .unwrap(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("channels and size must match"));
}
