//! CIFAR-10, binary version (`cifar-10-batches-bin/`: data_batch_1..5.bin, test_batch.bin).
//!
//! Each file holds records of one label byte and 3,072 pixel bytes (the red plane, then green,
//! then blue, each 32×32 row-major): 10,000 of them (30,730,000 bytes) in the real release, whose
//! bytes the fetch pins; the loader takes any whole number of records, so the dress rehearsal's
//! stand-in of a few hundred records loads the same way. The official code trains
//! on train+test (60,000 images, train first, as `load_dataset("cifar10", split="train+test")`
//! orders them); the paper's FID reference set is the 50,000 training images ([`Split::Train`]).
use std::path::{Path, PathBuf};

use anyhow::{ensure, Context, Result};
use tch::Tensor;

use super::{Dataset, Split};

pub const TRAIN_FILES: [&str; 5] = [
    "data_batch_1.bin",
    "data_batch_2.bin",
    "data_batch_3.bin",
    "data_batch_4.bin",
    "data_batch_5.bin",
];
pub const TEST_FILE: &str = "test_batch.bin";
pub const IMAGE_BYTES: usize = 3 * 32 * 32;
pub const RECORD_BYTES: usize = 1 + IMAGE_BYTES;
pub const RECORDS_PER_FILE: usize = 10_000;
pub const FILE_BYTES: usize = RECORD_BYTES * RECORDS_PER_FILE;

/// The directory that holds the batch files: `dir` itself or its `cifar-10-batches-bin/`.
fn batches_dir(dir: &Path) -> PathBuf {
    let nested = dir.join("cifar-10-batches-bin");
    if !dir.join(TEST_FILE).exists() && nested.is_dir() {
        nested
    } else {
        dir.to_path_buf()
    }
}

/// One batch file as (uint8 N×3×32×32 images, int64 labels).
pub fn read_batch_file(path: &Path) -> Result<(Tensor, Tensor)> {
    let bytes = std::fs::read(path).with_context(|| {
        format!(
            "reading CIFAR-10 batch {} (the binary version, cifar-10-binary.tar.gz)",
            path.display()
        )
    })?;
    parse_batch(path, &bytes)
}

/// [`read_batch_file`] of bytes already read (`path` only names them in errors).
pub(crate) fn parse_batch(path: &Path, bytes: &[u8]) -> Result<(Tensor, Tensor)> {
    ensure!(
        !bytes.is_empty() && bytes.len() % RECORD_BYTES == 0,
        "{}: {} bytes, not a whole number of records of 1 label byte + {IMAGE_BYTES} pixel bytes \
         (the real file has {RECORDS_PER_FILE}, {FILE_BYTES} bytes): the file is truncated or not a \
         CIFAR-10 binary batch (CIFAR-100 has 2 label bytes); delete it and fetch cifar10-binary again",
        path.display(),
        bytes.len(),
    );
    let records = bytes.len() / RECORD_BYTES;
    let mut labels = Vec::with_capacity(records);
    let mut pixels = Vec::with_capacity(records * IMAGE_BYTES);
    for (i, rec) in bytes.chunks_exact(RECORD_BYTES).enumerate() {
        ensure!(
            rec[0] <= 9,
            "{}: record {i} has label {} (expected 0..=9): not a CIFAR-10 binary batch",
            path.display(),
            rec[0]
        );
        labels.push(rec[0] as i64);
        pixels.extend_from_slice(&rec[1..]);
    }
    Ok((
        Tensor::from_slice(&pixels).reshape([records as i64, 3, 32, 32]),
        Tensor::from_slice(&labels),
    ))
}

/// CIFAR-10 from `dir` (the extracted `cifar-10-batches-bin/` or its parent).
pub fn load(dir: &Path, split: Split) -> Result<Dataset> {
    let dir = batches_dir(dir);
    let mut files: Vec<&str> = Vec::new();
    if matches!(split, Split::Train | Split::TrainTest) {
        files.extend(TRAIN_FILES);
    }
    if matches!(split, Split::Test | Split::TrainTest) {
        files.push(TEST_FILE);
    }
    let parts = files
        .iter()
        .map(|f| read_batch_file(&dir.join(f)))
        .collect::<Result<Vec<_>>>()?;
    let (xs, ys): (Vec<Tensor>, Vec<Tensor>) = parts.into_iter().unzip();
    Dataset::new("cifar10", Tensor::cat(&xs, 0), Tensor::cat(&ys, 0))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A full-size batch file whose record i has label i % 10 and pixels (i + plane) % 256.
    fn synthetic_batch(offset: usize) -> Vec<u8> {
        let mut v = Vec::with_capacity(FILE_BYTES);
        for i in 0..RECORDS_PER_FILE {
            v.push(((i + offset) % 10) as u8);
            for c in 0..3 {
                v.extend(std::iter::repeat_n(((i + offset + c) % 256) as u8, 1024));
            }
        }
        v
    }

    #[test]
    fn loads_train_and_test_in_official_order() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("cifar-10-batches-bin");
        std::fs::create_dir(&dir).unwrap();
        for (k, f) in TRAIN_FILES.iter().chain([&TEST_FILE]).enumerate() {
            std::fs::write(dir.join(f), synthetic_batch(k * RECORDS_PER_FILE)).unwrap();
        }
        let all = load(root.path(), Split::TrainTest).unwrap();
        assert_eq!(all.images.size(), [60_000, 3, 32, 32]);
        // Record 50,000 is the first test image; planes are R, G, B.
        let x = all.images.get(50_000);
        assert_eq!(all.labels.int64_value(&[50_000]), 0);
        assert_eq!(
            (
                x.int64_value(&[0, 0, 0]),
                x.int64_value(&[1, 5, 7]),
                x.int64_value(&[2, 31, 31])
            ),
            (
                (50_000 % 256) as i64,
                (50_001 % 256) as i64,
                (50_002 % 256) as i64
            )
        );
        assert_eq!(load(&dir, Split::Train).unwrap().len(), 50_000);
        assert_eq!(load(&dir, Split::Test).unwrap().len(), 10_000);
    }

    #[test]
    fn truncated_or_foreign_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut b = synthetic_batch(0);
        b.truncate(FILE_BYTES - 100);
        std::fs::write(dir.path().join(TEST_FILE), &b).unwrap();
        let err = format!("{:#}", load(dir.path(), Split::Test).unwrap_err());
        assert!(
            err.contains(TEST_FILE) && err.contains("30730000") && err.contains("truncated"),
            "{err}"
        );

        let mut b = synthetic_batch(0);
        b[RECORD_BYTES * 3] = 42;
        std::fs::write(dir.path().join(TEST_FILE), &b).unwrap();
        let err = format!("{:#}", load(dir.path(), Split::Test).unwrap_err());
        assert!(err.contains("record 3 has label 42"), "{err}");

        let err = format!("{:#}", load(dir.path(), Split::Train).unwrap_err());
        assert!(err.contains("data_batch_1.bin"), "{err}");
    }

    /// A stand-in of a few records loads like the real file; one byte short, it is refused.
    #[test]
    fn a_file_of_fewer_records_loads_and_a_short_record_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut b = synthetic_batch(0);
        b.truncate(64 * RECORD_BYTES);
        std::fs::write(dir.path().join(TEST_FILE), &b).unwrap();
        let test = load(dir.path(), Split::Test).unwrap();
        assert_eq!(test.images.size(), [64, 3, 32, 32]);
        assert_eq!(test.labels.int64_value(&[13]), 3);
        b.pop();
        std::fs::write(dir.path().join(TEST_FILE), &b).unwrap();
        let err = format!("{:#}", load(dir.path(), Split::Test).unwrap_err());
        assert!(
            err.contains("196671 bytes") && err.contains("truncated"),
            "{err}"
        );
    }
}
