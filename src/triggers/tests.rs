use super::*;
use crate::testing::{assert_close, official_images, oracle, reference_tensors};

fn sources() -> SourceImages {
    SourceImages::new(official_images())
}

fn rgb(size: usize) -> ImageShape {
    ImageShape::new(3, size).unwrap()
}

/// One official tensor: ours, the oracle spec that builds it the official way, and the name of
/// its reference `.npy` (`trigger_BOX_14_32`, ...).
struct Official {
    ours: Tensor,
    spec: String,
    reference: String,
}

/// Every trigger and target of the paper at 32 px (and GLASSES, CAT at 256 px).
fn officials(src: &SourceImages) -> Vec<Official> {
    let img = |f: &str| src.dir.join(f).display().to_string();
    let mut v = Vec::new();
    for trig in Trigger::all().into_iter().filter(|t| *t != Trigger::None) {
        let ours = trig.build(rgb(32), src).unwrap();
        let spec = match trig {
            Trigger::Box(n) => format!("box:3:32:{n}"),
            Trigger::StopSign(n) => format!("stop_sign:{}:3:32:{n}", img(STOP_SIGN_IMAGE.file)),
            Trigger::Glasses => format!("glasses:{}:3:32", img(GLASSES_IMAGE.file)),
            Trigger::None => unreachable!(),
        };
        let k = v.len();
        v.push(Official {
            ours: ours.shallow_clone(),
            spec,
            reference: format!("trigger_{trig}_32"),
        });
        if matches!(trig, Trigger::Box(_) | Trigger::StopSign(_)) {
            for (target, name, kind) in [
                (Target::NoShift, "TRIGGER", "noshift"),
                (Target::Shift, "SHIFT", "shift"),
            ] {
                v.push(Official {
                    ours: target.build(&ours, src).unwrap(),
                    spec: format!("{kind}:{k}"),
                    reference: format!("target_{name}_for_{trig}_32"),
                });
            }
        }
    }
    let g32 = Trigger::Box(14).build(rgb(32), src).unwrap();
    for (target, spec) in [
        (Target::Corner, "corner:3:32".to_string()),
        (Target::Hat, format!("target:{}:3:32", img(HAT_IMAGE.file))),
        (Target::Cat, format!("target:{}:3:32", img(CAT_IMAGE.file))),
    ] {
        v.push(Official {
            ours: target.build(&g32, src).unwrap(),
            spec,
            reference: format!("target_{}_32", target.to_string().to_uppercase()),
        });
    }
    let g256 = Trigger::Glasses.build(rgb(256), src).unwrap();
    v.push(Official {
        ours: g256.shallow_clone(),
        spec: format!("glasses:{}:3:256", img(GLASSES_IMAGE.file)),
        reference: "trigger_GLASSES_256".into(),
    });
    v.push(Official {
        ours: Target::Cat.build(&g256, src).unwrap(),
        spec: format!("target:{}:3:256", img(CAT_IMAGE.file)),
        reference: "target_CAT_256".into(),
    });
    v
}

/// Every trigger and target equals the official construction run by the Pillow/torchvision
/// oracle, and, where this checkout has the reference tensors beside it, those too.
#[test]
fn triggers_and_targets_equal_the_official_tensors() {
    let src = sources();
    let cases = officials(&src);
    let argv: Vec<&str> = cases.iter().map(|c| c.spec.as_str()).collect();
    let out = oracle("backdoor_images", &[], &argv);
    for (k, c) in cases.iter().enumerate() {
        assert_close(
            &format!("{} against the oracle", c.reference),
            &c.ours,
            &out[&format!("out_{k}")],
            1e-6,
        );
    }
    match reference_tensors() {
        Some(dir) => {
            for c in &cases {
                let p = dir.join(format!("{}.npy", c.reference));
                let t =
                    Tensor::read_npy(&p).unwrap_or_else(|e| panic!("reading {}: {e}", p.display()));
                assert_close(
                    &format!("{} against {}", c.reference, p.display()),
                    &c.ours,
                    &t,
                    1e-6,
                );
            }
            eprintln!(
                "compared {} tensors with the oracle and with {}",
                cases.len(),
                dir.display()
            );
        }
        None => eprintln!(
            "compared {} tensors with the oracle; no reference tensors beside this checkout",
            cases.len()
        ),
    }
    let none = Trigger::None
        .build(ImageShape::new(1, 16).unwrap(), &src)
        .unwrap();
    assert_eq!(none.size(), [1, 16, 16]);
    assert!(none.eq(-1.0).all().int64_value(&[]) == 1);
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
    let mut bytes = std::fs::read(official_images().join(HAT_IMAGE.file)).unwrap();
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
