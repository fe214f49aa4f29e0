//! Loaders for the datasets without a copy in `../shared/data` (Fashion-MNIST, CIFAR-100, the
//! canonical N-MNIST tree), on synthetic files in the exact real formats, and every bad-file
//! case: bad magic, truncation, a count that disagrees with the size, out-of-range labels or
//! coordinates, malformed label lists, missing files. Each must be one line naming the file.

#[path = "data/support.rs"]
mod support;

use mpsnn::data::{Dataset, DatasetName, Loader, LoaderConfig, Split};
use mpsnn::Error;
use std::path::Path;
use std::sync::Arc;
use support::{event, expect_err, gz, idx_bytes, noise, write_idx_split};

#[test]
fn fashion_mnist_loads_gz_and_raw_with_its_own_normalization() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("fashion-mnist");
    let (px, labels) = write_idx_split(&dir, "train", 120, true, 7);
    write_idx_split(&dir, "t10k", 30, false, 8);
    let train = Dataset::load(DatasetName::FashionMnist, Split::Train, root.path()).unwrap();
    let test = Dataset::load(DatasetName::FashionMnist, Split::Test, root.path()).unwrap();
    assert_eq!((train.len(), test.len()), (120, 30));
    assert_eq!(
        train.labels().collect::<Vec<_>>(),
        labels.iter().map(|&l| l as usize).collect::<Vec<_>>()
    );
    assert_eq!(train.image(1).unwrap(), &px[784..1568]);
    assert_eq!(train.class_counts(), vec![12; 10]);
    let batch = Loader::new(Arc::new(train), &LoaderConfig::new(4, 1))
        .unwrap()
        .next()
        .unwrap();
    assert_eq!(
        batch.input.data()[0],
        (px[0] as f32 / 255.0 - 0.2860) / 0.3530
    );
}

/// Writes a CIFAR-100 binary file of `n` records (coarse = fine / 5, fine = i % 100).
fn write_cifar100(path: &Path, n: usize, seed: u64) -> Vec<u8> {
    let px = noise(n * 3072, seed);
    let mut bytes = Vec::with_capacity(n * 3074);
    for (i, img) in px.chunks_exact(3072).enumerate() {
        let fine = (i % 100) as u8;
        bytes.extend_from_slice(&[fine / 5, fine]);
        bytes.extend_from_slice(img);
    }
    std::fs::write(path, bytes).unwrap();
    px
}

#[test]
fn cifar100_full_size_files_give_fine_labels() {
    let root = tempfile::tempdir().unwrap();
    // The layout the official tarball unpacks to.
    let dir = root.path().join("cifar100/cifar-100-binary");
    std::fs::create_dir_all(&dir).unwrap();
    let px = write_cifar100(&dir.join("test.bin"), 10_000, 3);
    write_cifar100(&dir.join("train.bin"), 50_000, 4);
    let test = Dataset::load(DatasetName::Cifar100, Split::Test, root.path()).unwrap();
    let train = Dataset::load(DatasetName::Cifar100, Split::Train, root.path()).unwrap();
    assert_eq!(
        (train.len(), test.len(), test.classes()),
        (50_000, 10_000, 100)
    );
    assert_eq!(train.class_counts(), vec![500; 100]);
    assert_eq!(test.class_counts(), vec![100; 100]);
    assert_eq!((test.label(0), test.label(99), test.label(100)), (0, 99, 0));
    assert_eq!(test.image(9_999).unwrap(), &px[9_999 * 3072..]);
}

#[test]
fn nmnist_canonical_tree_is_read_in_sample_order_with_folder_labels() {
    let root = tempfile::tempdir().unwrap();
    let train = root.path().join("nmnist/Train");
    // Sample numbers interleave digits, as in the release (00001 is a 5, 00002 a 0, ...).
    let samples: [(u8, &str, Vec<[u8; 5]>); 3] = [
        (5, "00001.bin", vec![event(1, 2, 1, 10), event(3, 4, 0, 30)]),
        (0, "00002.bin", vec![event(33, 33, 0, 0)]),
        (
            5,
            "00010.bin",
            vec![event(0, 0, 1, 5), event(0, 0, 1, 6), event(0, 0, 1, 7)],
        ),
    ];
    for (digit, file, events) in &samples {
        let d = train.join(digit.to_string());
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join(file), events.concat()).unwrap();
    }
    std::fs::write(train.join("0/readme.txt"), "not a sample").unwrap();
    let ds = Dataset::load(DatasetName::Nmnist, Split::Train, root.path()).unwrap();
    assert_eq!(ds.labels().collect::<Vec<_>>(), vec![5, 0, 5]);
    let e = ds.events(0).unwrap();
    assert_eq!(
        (e.len(), e[1].x, e[1].y, e[1].p, e[1].t_us),
        (2, 3, 4, 0, 30)
    );
    let batch = Loader::new(Arc::new(ds), &LoaderConfig::new(3, 2))
        .unwrap()
        .next()
        .unwrap();
    assert_eq!(batch.input.shape(), &[6, 2, 34, 34]);
    let sums: Vec<f32> = batch
        .input
        .data()
        .chunks(2312)
        .map(|f| f.iter().sum())
        .collect();
    // Rows are t·B + b. Sample 2's events at 5, 6, 7 µs split 1 | 2 (dt = 1, and the last
    // frame takes the remainder).
    assert_eq!(sums, vec![1.0, 1.0, 1.0, 1.0, 0.0, 2.0]);
    // The missing test split is a one-line DataMissing naming where it looked.
    let e = expect_err(
        Dataset::load(DatasetName::Nmnist, Split::Test, root.path()),
        &["test", "nmnist"],
    );
    assert!(matches!(e, Error::DataMissing(_)), "{e:?}");
}

#[test]
fn nmnist_flat_layout_reads_samples_in_list_order() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("nmnist-small");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("train5.txt"), "#sample #class\r\n7\t3\r\n2\t9\r\n").unwrap();
    std::fs::write(dir.join("7.bs2"), event(1, 1, 0, 0)).unwrap();
    std::fs::write(
        dir.join("2.bs2"),
        [event(2, 2, 1, 0), event(2, 2, 1, 9)].concat(),
    )
    .unwrap();
    // An unrelated, empty `nmnist/` folder does not hide the subset.
    std::fs::create_dir_all(root.path().join("nmnist")).unwrap();
    let ds = Dataset::load(DatasetName::Nmnist, Split::Train, root.path()).unwrap();
    assert_eq!(ds.labels().collect::<Vec<_>>(), vec![3, 9]);
    assert_eq!(ds.events(1).unwrap().len(), 2);
}

/// A temp root with a valid raw MNIST train split, for corrupting one file at a time.
fn mnist_root(n: usize) -> tempfile::TempDir {
    let root = tempfile::tempdir().unwrap();
    write_idx_split(&root.path().join("mnist"), "train", n, false, 1);
    root
}

fn load_mnist(root: &Path) -> mpsnn::Result<Dataset> {
    Dataset::load(DatasetName::Mnist, Split::Train, root)
}

#[test]
fn idx_bad_magic_is_named() {
    let root = mnist_root(10);
    let labels = root.path().join("mnist/train-labels-idx1-ubyte");
    let mut b = std::fs::read(&labels).unwrap();
    b[3] = 3;
    std::fs::write(&labels, b).unwrap();
    let e = expect_err(
        load_mnist(root.path()),
        &["train-labels-idx1-ubyte", "bad magic 0x00000803"],
    );
    assert!(matches!(e, Error::BadFile { .. }));
}

#[test]
fn idx_truncated_files_are_named() {
    let root = mnist_root(10);
    let images = root.path().join("mnist/train-images-idx3-ubyte");
    let b = std::fs::read(&images).unwrap();
    std::fs::write(&images, &b[..b.len() - 100]).unwrap();
    expect_err(
        load_mnist(root.path()),
        &["train-images-idx3-ubyte", "truncated", "10x28x28"],
    );
    std::fs::write(&images, &b[..10]).unwrap();
    expect_err(
        load_mnist(root.path()),
        &["train-images-idx3-ubyte", "truncated", "header needs 16"],
    );
}

#[test]
fn idx_truncated_gzip_is_named() {
    let root = mnist_root(10);
    let dir = root.path().join("mnist");
    let raw = std::fs::read(dir.join("train-images-idx3-ubyte")).unwrap();
    std::fs::remove_file(dir.join("train-images-idx3-ubyte")).unwrap();
    let z = gz(&raw);
    std::fs::write(dir.join("train-images-idx3-ubyte.gz"), &z[..z.len() / 2]).unwrap();
    expect_err(
        load_mnist(root.path()),
        &["train-images-idx3-ubyte.gz", "gzip"],
    );
}

#[test]
fn idx_header_count_disagreeing_with_size_is_named() {
    let root = mnist_root(10);
    let dir = root.path().join("mnist");
    // Header says 9 images but the payload holds 10.
    let mut b = std::fs::read(dir.join("train-images-idx3-ubyte")).unwrap();
    b[7] = 9;
    std::fs::write(dir.join("train-images-idx3-ubyte"), b).unwrap();
    expect_err(
        load_mnist(root.path()),
        &["train-images-idx3-ubyte", "wrong count", "9x28x28"],
    );
    // Consistent files, but 9 labels for 10 images.
    write_idx_split(&dir, "train", 10, false, 1);
    std::fs::write(
        dir.join("train-labels-idx1-ubyte"),
        idx_bytes(&[9], &[0; 9]),
    )
    .unwrap();
    expect_err(
        load_mnist(root.path()),
        &["train-labels-idx1-ubyte", "9 labels for 10 images"],
    );
}

#[test]
fn idx_wrong_image_size_and_bad_labels_are_named() {
    let root = mnist_root(2);
    let dir = root.path().join("mnist");
    std::fs::write(
        dir.join("train-images-idx3-ubyte"),
        idx_bytes(&[2, 32, 32], &[0; 2048]),
    )
    .unwrap();
    expect_err(
        load_mnist(root.path()),
        &["train-images-idx3-ubyte", "32x32, expected 28x28"],
    );
    write_idx_split(&dir, "train", 2, false, 1);
    std::fs::write(
        dir.join("train-labels-idx1-ubyte"),
        idx_bytes(&[2], &[3, 10]),
    )
    .unwrap();
    expect_err(
        load_mnist(root.path()),
        &["train-labels-idx1-ubyte", "label 10 of sample 1"],
    );
}

#[test]
fn missing_files_name_the_path_and_how_to_get_them() {
    let root = tempfile::tempdir().unwrap();
    let e = expect_err(
        load_mnist(root.path()),
        &["mnist not found under", "mpsnn data fetch mnist"],
    );
    assert!(matches!(e, Error::DataMissing(_)));
    let root = mnist_root(3);
    std::fs::remove_file(root.path().join("mnist/train-labels-idx1-ubyte")).unwrap();
    let e = expect_err(
        load_mnist(root.path()),
        &[
            "mnist/train-labels-idx1-ubyte not found",
            "mpsnn data fetch mnist",
        ],
    );
    assert!(matches!(e, Error::DataMissing(_)));
    let cifar = root.path().join("cifar10");
    std::fs::create_dir_all(&cifar).unwrap();
    expect_err(
        Dataset::load(DatasetName::Cifar10, Split::Test, root.path()),
        &["cifar10/test_batch.bin not found"],
    );
}

#[test]
fn cifar_truncated_and_short_files_are_named() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("cifar100");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("test.bin");
    write_cifar100(&path, 10_000, 1);
    let b = std::fs::read(&path).unwrap();
    let load = || Dataset::load(DatasetName::Cifar100, Split::Test, root.path());
    std::fs::write(&path, &b[..b.len() - 1]).unwrap();
    expect_err(load(), &["test.bin", "truncated", "3074-byte records"]);
    std::fs::write(&path, &b[..b.len() - 3074]).unwrap();
    expect_err(
        load(),
        &["test.bin", "wrong count: 9999 records, expected 10000"],
    );
    let mut bad = b.clone();
    bad[3074 * 5 + 1] = 100;
    std::fs::write(&path, &bad).unwrap();
    expect_err(load(), &["test.bin", "label 100 of record 5"]);
    // A complete gzip of half the records, then a gzip stream cut in half.
    std::fs::remove_file(&path).unwrap();
    std::fs::write(dir.join("test.bin.gz"), gz(&b[..b.len() / 2])).unwrap();
    expect_err(load(), &["test.bin.gz", "wrong count: 5000 records"]);
    let z = gz(&b);
    std::fs::write(dir.join("test.bin.gz"), &z[..z.len() / 2]).unwrap();
    expect_err(load(), &["test.bin.gz", "truncated gzip"]);
}

#[test]
fn nmnist_bad_samples_and_lists_are_named() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("nmnist-small");
    std::fs::create_dir_all(&dir).unwrap();
    let load = || Dataset::load(DatasetName::Nmnist, Split::Test, root.path());
    std::fs::write(
        dir.join("test100.txt"),
        "#sample #class\n60001 7\n60002 2\n",
    )
    .unwrap();
    std::fs::write(dir.join("60001.bs2"), event(1, 1, 1, 1)).unwrap();
    std::fs::write(
        dir.join("60002.bs2"),
        [event(1, 1, 1, 1), event(2, 2, 0, 3)].concat(),
    )
    .unwrap();
    assert_eq!(load().unwrap().len(), 2);
    std::fs::write(
        dir.join("60002.bs2"),
        &[event(1, 1, 1, 1), event(2, 2, 0, 3)].concat()[..8],
    )
    .unwrap();
    expect_err(load(), &["60002.bs2", "truncated", "5-byte events"]);
    std::fs::write(dir.join("60002.bs2"), event(40, 2, 0, 3)).unwrap();
    expect_err(
        load(),
        &[
            "60002.bs2",
            "event 0 at x=40, y=2 is outside the 34x34 sensor",
        ],
    );
    std::fs::remove_file(dir.join("60002.bs2")).unwrap();
    let e = expect_err(load(), &["60002.bs2 not found"]);
    assert!(matches!(e, Error::DataMissing(_)));
    std::fs::write(dir.join("test100.txt"), "60001 7\n60002 twelve\n").unwrap();
    expect_err(load(), &["test100.txt", "line 2", "60002 twelve"]);
    std::fs::write(dir.join("test100.txt"), "60001 10\n").unwrap();
    expect_err(load(), &["test100.txt", "line 1"]);
}
