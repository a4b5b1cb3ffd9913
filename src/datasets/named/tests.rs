use super::*;

#[test]
fn parses_names_splits_and_sizes() {
    let p = Selection::parse("dataset:cifar10").unwrap();
    assert_eq!(p, Selection::new(DatasetName::Cifar10, Split::Train));
    assert_eq!(p.label(), "cifar10-train");
    assert_eq!(Selection::parse("dataset:cifar10-train").unwrap(), p);
    assert_eq!(
        Selection::parse("dataset:cifar10:train@32")
            .unwrap()
            .label(),
        "cifar10-train"
    );
    let f = Selection::parse("dataset:fashion-mnist:test@16").unwrap();
    assert_eq!(
        (f.dataset, f.split, f.size),
        (DatasetName::FashionMnist, Split::Test, Some(16))
    );
    assert_eq!(f.label(), "fashion-mnist-test@16px");
    let t = Selection::parse("dataset:mnist-train+test").unwrap();
    assert_eq!((t.dataset, t.split), (DatasetName::Mnist, Split::TrainTest));
    assert_eq!(
        Selection {
            n: Some(2048),
            ..Selection::new(DatasetName::Cifar10, Split::Train)
        }
        .label(),
        "cifar10-train, first 2048"
    );

    for (arg, needle) in [
        ("dataset:imagenet", "unknown dataset `imagenet`"),
        ("dataset:cifar10:val", "unknown split `val`"),
        ("dataset:cifar10@0", "size `0`"),
        ("dataset:cifar10@big", "size `big`"),
        ("dataset::train", "no dataset name"),
    ] {
        let err = format!("{:#}", Selection::parse(arg).unwrap_err());
        assert!(err.contains(needle), "{arg}: {err}");
    }
    let err = format!("{:#}", Selection::parse("dataset:imagenet").unwrap_err());
    assert!(
        err.contains("cifar10, fashion-mnist, mnist, celeba-hq"),
        "{err}"
    );
    // A size above the dataset's own is refused before any file is read.
    let err = format!(
        "{:#}",
        Selection::parse("fashion-mnist:train@64")
            .unwrap()
            .load(Some(1))
            .unwrap_err()
    );
    assert!(
        err.contains("fashion-mnist-train@64px: fashion-mnist images are 28×28 px")
            && err.contains("at most 28"),
        "{err}"
    );
}
