//! MNIST and Fashion-MNIST in their idx format (`train-images-idx3-ubyte[.gz]` etc.).
//!
//! Files are read raw or gzip-compressed (detected by content, not by name). The header's
//! dimensions say exactly how many bytes must follow, so a truncated or padded file is an error
//! naming the file and its expected size; a label file in place of an image file (or a label
//! count that does not match the images) is an error too, never a silently shifted dataset.
use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{bail, ensure, Context, Result};
use tch::Tensor;

use super::{Dataset, Split};

/// Where Debian's `dataset-fashion-mnist` package installs the idx files.
pub const DEBIAN_FASHION_MNIST_DIR: &str = "/usr/share/datasets/fashion-mnist";

const MAGIC_IMAGES: u32 = 0x0000_0803;
const MAGIC_LABELS: u32 = 0x0000_0801;

/// The files' stems as LeCun's and Zalando's distributions name them.
const TRAIN_IMAGES: &str = "train-images-idx3-ubyte";
const TRAIN_LABELS: &str = "train-labels-idx1-ubyte";
const TEST_IMAGES: &str = "t10k-images-idx3-ubyte";
const TEST_LABELS: &str = "t10k-labels-idx1-ubyte";

/// The file's bytes, gunzipped when they start with the gzip magic.
fn read_bytes(path: &Path) -> Result<Vec<u8>> {
    let raw = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&raw[..])
            .read_to_end(&mut out)
            .with_context(|| format!("{}: corrupt or truncated gzip stream", path.display()))?;
        Ok(out)
    } else {
        Ok(raw)
    }
}

/// Parses the header, checks the magic and the exact payload size; returns (dims, payload).
fn parse(path: &Path, magic: u32, what: &str) -> Result<(Vec<usize>, Vec<u8>)> {
    parse_bytes(path, read_bytes(path)?, magic, what)
}

/// [`parse`] of bytes already read (`path` only names them in errors).
fn parse_bytes(
    path: &Path,
    bytes: Vec<u8>,
    magic: u32,
    what: &str,
) -> Result<(Vec<usize>, Vec<u8>)> {
    ensure!(
        bytes.len() >= 4,
        "{}: {} bytes is too short for an idx file",
        path.display(),
        bytes.len()
    );
    let found = u32::from_be_bytes(bytes[..4].try_into().unwrap());
    if found != magic {
        let kind = match found {
            MAGIC_IMAGES => "an image file",
            MAGIC_LABELS => "a label file",
            _ => "not an idx file of unsigned bytes",
        };
        bail!(
            "{}: magic 0x{found:08x} ({kind}), expected 0x{magic:08x} ({what})",
            path.display()
        );
    }
    let ndim = (magic & 0xff) as usize;
    let header = 4 + 4 * ndim;
    ensure!(
        bytes.len() >= header,
        "{}: truncated header ({} bytes, expected {header})",
        path.display(),
        bytes.len()
    );
    let dims: Vec<usize> = (0..ndim)
        .map(|i| u32::from_be_bytes(bytes[4 + 4 * i..8 + 4 * i].try_into().unwrap()) as usize)
        .collect();
    if let Some(i) = dims.iter().position(|&d| d == 0) {
        bail!(
            "{}: dimension {i} is 0 (dimensions {dims:?}): the file holds no {what}",
            path.display()
        );
    }
    let expected = dims
        .iter()
        .try_fold(1usize, |n, &d| n.checked_mul(d))
        .and_then(|n| n.checked_add(header))
        .with_context(|| {
            format!(
                "{}: the header's dimensions {dims:?} overflow: not an idx file of {what}",
                path.display()
            )
        })?;
    ensure!(
        bytes.len() == expected,
        "{}: {} ({}) bytes where the header's dimensions {dims:?} require exactly {expected}: the file is {}",
        path.display(),
        bytes.len(),
        if path.extension().is_some_and(|e| e == "gz") { "decompressed" } else { "raw" },
        if bytes.len() < expected { "truncated" } else { "longer than declared" }
    );
    Ok((dims, bytes[header..].to_vec()))
}

/// Images of an idx3 file as uint8 N×1×H×W.
pub fn read_images(path: &Path) -> Result<Tensor> {
    let (dims, data) = parse(path, MAGIC_IMAGES, "images")?;
    Ok(images(&dims, &data))
}

fn images(dims: &[usize], data: &[u8]) -> Tensor {
    let d: Vec<i64> = dims.iter().map(|&d| d as i64).collect();
    Tensor::from_slice(data).reshape([d[0], 1, d[1], d[2]])
}

/// [`read_images`] of a file's (decompressed) bytes; for the property tests.
#[cfg(test)]
pub(crate) fn images_from_bytes(bytes: Vec<u8>) -> Result<Tensor> {
    let (dims, data) = parse_bytes(Path::new("<bytes>"), bytes, MAGIC_IMAGES, "images")?;
    Ok(images(&dims, &data))
}

/// Labels of an idx1 file as int64 N.
pub fn read_labels(path: &Path) -> Result<Tensor> {
    let (_, data) = parse(path, MAGIC_LABELS, "labels")?;
    Ok(Tensor::from_slice(&data).to_kind(tch::Kind::Int64))
}

/// `dir/stem` or `dir/stem.gz`, whichever exists.
pub fn find(dir: &Path, stem: &str) -> Result<PathBuf> {
    for name in [format!("{stem}.gz"), stem.to_string()] {
        let p = dir.join(name);
        if p.is_file() {
            return Ok(p);
        }
    }
    bail!("{}: neither {stem} nor {stem}.gz found", dir.display())
}

/// One split's images and labels, checked against each other (same count, labels 0..=9).
fn load_split(dir: &Path, images: &str, labels: &str) -> Result<(Tensor, Tensor)> {
    let (ip, lp) = (find(dir, images)?, find(dir, labels)?);
    let (x, y) = (read_images(&ip)?, read_labels(&lp)?);
    ensure!(
        x.size()[0] == y.size()[0],
        "{} holds {} images but {} holds {} labels: the files do not belong together",
        ip.display(),
        x.size()[0],
        lp.display(),
        y.size()[0]
    );
    let max = y.max().int64_value(&[]);
    ensure!(max <= 9, "{}: label {max} out of range 0..=9", lp.display());
    Ok((x, y))
}

/// An MNIST-layout dataset (MNIST, Fashion-MNIST) from `dir`.
pub fn load(dir: &Path, name: &str, split: Split) -> Result<Dataset> {
    let mut parts = Vec::new();
    if matches!(split, Split::Train | Split::TrainTest) {
        parts.push(load_split(dir, TRAIN_IMAGES, TRAIN_LABELS)?);
    }
    if matches!(split, Split::Test | Split::TrainTest) {
        parts.push(load_split(dir, TEST_IMAGES, TEST_LABELS)?);
    }
    let (xs, ys): (Vec<Tensor>, Vec<Tensor>) = parts.into_iter().unzip();
    Dataset::new(name, Tensor::cat(&xs, 0), Tensor::cat(&ys, 0))
}

/// Fashion-MNIST (Debian's `dataset-fashion-mnist` puts it in
/// [`DEBIAN_FASHION_MNIST_DIR`]).
pub fn fashion_mnist(dir: &Path, split: Split) -> Result<Dataset> {
    load(dir, "fashion-mnist", split)
}

/// MNIST.
pub fn mnist(dir: &Path, split: Split) -> Result<Dataset> {
    load(dir, "mnist", split)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn idx_bytes(magic: u32, dims: &[u32], payload: &[u8]) -> Vec<u8> {
        let mut v = magic.to_be_bytes().to_vec();
        dims.iter().for_each(|d| v.extend(d.to_be_bytes()));
        v.extend_from_slice(payload);
        v
    }

    fn gz(bytes: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(bytes).unwrap();
        e.finish().unwrap()
    }

    /// Writes a 3-image train split (raw images, gzipped labels) and a 2-image test split.
    fn write_small(dir: &Path) {
        let px: Vec<u8> = (0..3 * 4 * 5).map(|i| i as u8).collect();
        std::fs::write(
            dir.join(TRAIN_IMAGES),
            idx_bytes(MAGIC_IMAGES, &[3, 4, 5], &px),
        )
        .unwrap();
        std::fs::write(
            dir.join(format!("{TRAIN_LABELS}.gz")),
            gz(&idx_bytes(MAGIC_LABELS, &[3], &[7, 0, 9])),
        )
        .unwrap();
        std::fs::write(
            dir.join(format!("{TEST_IMAGES}.gz")),
            gz(&idx_bytes(MAGIC_IMAGES, &[2, 4, 5], &px[..40])),
        )
        .unwrap();
        std::fs::write(
            dir.join(TEST_LABELS),
            idx_bytes(MAGIC_LABELS, &[2], &[1, 2]),
        )
        .unwrap();
    }

    /// A file with zero images, or dimensions whose product overflows, is an error naming the
    /// file (it panicked: on the overflow, and on the empty label tensor's maximum).
    #[test]
    fn empty_or_overflowing_dimensions_are_refused_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("imgs");
        for (dims, says) in [
            (vec![0, 4, 5], "dimension 0 is 0"),
            (vec![3, 0, 5], "dimension 1 is 0"),
            (vec![u32::MAX, u32::MAX, u32::MAX], "overflow"),
        ] {
            // Zero dimensions with exactly the (empty) payload they declare.
            std::fs::write(&path, idx_bytes(MAGIC_IMAGES, &dims, &[])).unwrap();
            let err = format!("{:#}", read_images(&path).unwrap_err());
            assert!(
                err.contains("imgs") && err.contains(says),
                "{dims:?}: {err}"
            );
        }
        std::fs::write(&path, idx_bytes(MAGIC_LABELS, &[0], &[])).unwrap();
        let err = format!("{:#}", read_labels(&path).unwrap_err());
        assert!(
            err.contains("imgs") && err.contains("dimension 0 is 0"),
            "{err}"
        );
    }

    #[test]
    fn reads_raw_and_gzipped_splits() {
        let dir = tempfile::tempdir().unwrap();
        write_small(dir.path());
        let ds = load(dir.path(), "tiny", Split::TrainTest).unwrap();
        assert_eq!(ds.images.size(), [5, 1, 4, 5]);
        assert_eq!(Vec::<i64>::try_from(&ds.labels).unwrap(), [7, 0, 9, 1, 2]);
        assert_eq!(
            ds.images.get(0).get(0).get(1).int64_value(&[2]),
            7,
            "row-major pixel order"
        );
        assert_eq!(load(dir.path(), "tiny", Split::Test).unwrap().len(), 2);
    }

    #[test]
    fn truncated_file_names_file_and_expected_size() {
        let dir = tempfile::tempdir().unwrap();
        write_small(dir.path());
        let p = dir.path().join(TRAIN_IMAGES);
        let bytes = std::fs::read(&p).unwrap();
        std::fs::write(&p, &bytes[..bytes.len() - 7]).unwrap();
        let err = format!("{:#}", load(dir.path(), "tiny", Split::Train).unwrap_err());
        assert!(
            err.contains(TRAIN_IMAGES) && err.contains("76") && err.contains("truncated"),
            "{err}"
        );
        // A truncated gzip stream is caught as well.
        let gzp = dir.path().join(format!("{TRAIN_LABELS}.gz"));
        let gzb = std::fs::read(&gzp).unwrap();
        std::fs::write(&gzp, &gzb[..gzb.len() / 2]).unwrap();
        let err = format!("{:#}", read_labels(&gzp).unwrap_err());
        assert!(err.contains(TRAIN_LABELS), "{err}");
    }

    #[test]
    fn mislabelled_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        write_small(dir.path());
        // A label file where the images belong.
        std::fs::copy(dir.path().join(TEST_LABELS), dir.path().join(TRAIN_IMAGES)).unwrap();
        let err = format!("{:#}", load(dir.path(), "tiny", Split::Train).unwrap_err());
        assert!(
            err.contains("a label file") && err.contains(TRAIN_IMAGES),
            "{err}"
        );
        // Counts that disagree.
        write_small(dir.path());
        std::fs::write(
            dir.path().join(TEST_LABELS),
            idx_bytes(MAGIC_LABELS, &[3], &[1, 2, 3]),
        )
        .unwrap();
        let err = format!("{:#}", load(dir.path(), "tiny", Split::Test).unwrap_err());
        assert!(
            err.contains("2 images") && err.contains("3 labels"),
            "{err}"
        );
        // Labels outside 0..=9.
        std::fs::write(
            dir.path().join(TEST_LABELS),
            idx_bytes(MAGIC_LABELS, &[2], &[1, 12]),
        )
        .unwrap();
        let err = format!("{:#}", load(dir.path(), "tiny", Split::Test).unwrap_err());
        assert!(err.contains("label 12"), "{err}");
        // Missing files.
        let empty = tempfile::tempdir().unwrap();
        assert!(format!(
            "{:#}",
            load(empty.path(), "tiny", Split::Train).unwrap_err()
        )
        .contains(TRAIN_IMAGES));
    }

    #[test]
    fn debian_fashion_mnist() {
        let dir = Path::new(crate::datasets::idx::DEBIAN_FASHION_MNIST_DIR);
        let ds = fashion_mnist(dir, Split::TrainTest)
            .expect("Debian's dataset-fashion-mnist (cargo xtask test installs it)");
        assert_eq!(ds.images.size(), [70_000, 1, 28, 28]);
        // Fashion-MNIST is balanced: 7,000 images per class over train+test.
        let counts = ds.labels.bincount(None::<Tensor>, 10);
        assert!(
            counts.eq(7000).all().int64_value(&[]) == 1,
            "class counts {counts:?}"
        );
        assert_eq!(ds.labels.int64_value(&[0]), 9, "train[0] is an ankle boot");
    }
}
