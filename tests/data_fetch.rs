//! The data root, dataset listing and `fetch`: staged downloads from `file://` mirrors (the same
//! code path as HTTP after the transfer), sha256 verification, and the guarantee that a failed
//! fetch leaves nothing in the cache.

#[path = "data/support.rs"]
mod support;

use mpsnn::data::{
    fetch, fetch_from, how_to_obtain, list, resolve_data_root, DataFile, Dataset, DatasetName,
    FetchOptions, Source, Split, SplitStatus,
};
use mpsnn::Error;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use support::{expect_err, write_idx_split};

fn sha256_hex(b: &[u8]) -> String {
    Sha256::digest(b)
        .iter()
        .map(|x| format!("{x:02x}"))
        .collect()
}

const IDX: [(&str, Split); 4] = [
    ("train-images-idx3-ubyte", Split::Train),
    ("train-labels-idx1-ubyte", Split::Train),
    ("t10k-images-idx3-ubyte", Split::Test),
    ("t10k-labels-idx1-ubyte", Split::Test),
];

/// A mirror folder with a synthetic MNIST as `.gz` files, and the expected-file table with the
/// true content checksums.
fn mnist_mirror() -> (tempfile::TempDir, Vec<DataFile>) {
    let mirror = tempfile::tempdir().unwrap();
    write_idx_split(mirror.path(), "train", 50, true, 1);
    write_idx_split(mirror.path(), "t10k", 20, true, 2);
    let files = IDX
        .iter()
        .map(|&(name, split)| {
            let raw = mpsnn_gunzip(&mirror.path().join(format!("{name}.gz")));
            DataFile {
                name: name.into(),
                split,
                sha256: Some(sha256_hex(&raw)),
            }
        })
        .collect();
    (mirror, files)
}

fn mpsnn_gunzip(p: &Path) -> Vec<u8> {
    use std::io::Read;
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(std::fs::File::open(p).unwrap())
        .read_to_end(&mut out)
        .unwrap();
    out
}

fn url_of(dir: &Path) -> String {
    format!("file://{}/", dir.display())
}

/// Everything under `root`, relative, sorted.
fn tree(root: &Path) -> Vec<PathBuf> {
    fn walk(d: &Path, root: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(d).unwrap() {
            let p = e.unwrap().path();
            out.push(p.strip_prefix(root).unwrap().to_path_buf());
            if p.is_dir() {
                walk(&p, root, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(root, root, &mut out);
    out.sort();
    out
}

#[test]
fn fetch_installs_verified_files_once() {
    let (mirror, files) = mnist_mirror();
    let cache = tempfile::tempdir().unwrap();
    let routes = [Source::GzFiles {
        base_urls: vec![url_of(mirror.path())],
    }];
    let opts = FetchOptions::default();
    let report = fetch_from(DatasetName::Mnist, cache.path(), &routes, &files, opts).unwrap();
    assert_eq!(report.dir, cache.path().join("mnist"));
    assert_eq!(report.files.len(), 4);
    assert!(report.route.starts_with("download from file://"));
    let names: Vec<PathBuf> = tree(cache.path());
    assert_eq!(names.len(), 5, "only mnist/ and its four files: {names:?}");
    let test = Dataset::load(DatasetName::Mnist, Split::Test, cache.path()).unwrap();
    assert_eq!(test.len(), 20);
    let again = fetch_from(DatasetName::Mnist, cache.path(), &routes, &files, opts).unwrap();
    assert_eq!(
        (again.route.as_str(), again.files.len()),
        ("already present", 0)
    );
}

#[cfg(target_os = "linux")]
#[test]
fn staging_left_by_a_dead_process_is_cleaned_up() {
    let (mirror, files) = mnist_mirror();
    let cache = tempfile::tempdir().unwrap();
    // pid 4294967295 cannot exist (beyond Linux's pid_max); our own pid is alive.
    let dead = cache.path().join(".mpsnn-fetch-mnist-4294967295-1");
    let alive = cache
        .path()
        .join(format!(".mpsnn-fetch-mnist-{}-1", std::process::id()));
    std::fs::create_dir_all(dead.join("x")).unwrap();
    std::fs::create_dir_all(&alive).unwrap();
    let routes = [Source::GzFiles {
        base_urls: vec![url_of(mirror.path())],
    }];
    fetch_from(
        DatasetName::Mnist,
        cache.path(),
        &routes,
        &files,
        FetchOptions::default(),
    )
    .unwrap();
    assert!(!dead.exists() && alive.exists());
}

#[test]
fn checksum_mismatch_leaves_nothing_in_the_cache() {
    let (mirror, mut files) = mnist_mirror();
    files[2].sha256 = Some("0".repeat(64));
    let cache = tempfile::tempdir().unwrap();
    let routes = [Source::GzFiles {
        base_urls: vec![url_of(mirror.path())],
    }];
    let r = fetch_from(
        DatasetName::Mnist,
        cache.path(),
        &routes,
        &files,
        FetchOptions::default(),
    );
    let e = expect_err(
        r,
        &[
            "t10k-images-idx3-ubyte.gz",
            "sha256 mismatch",
            &"0".repeat(64),
        ],
    );
    assert!(matches!(e, Error::BadFile { .. }));
    assert_eq!(tree(cache.path()), Vec::<PathBuf>::new());
}

#[test]
fn a_missing_file_aborts_the_route_and_the_next_route_is_tried() {
    let (mirror, files) = mnist_mirror();
    let partial = tempfile::tempdir().unwrap();
    for (name, _) in &IDX[..3] {
        let f = format!("{name}.gz");
        std::fs::copy(mirror.path().join(&f), partial.path().join(&f)).unwrap();
    }
    let cache = tempfile::tempdir().unwrap();
    let broken = Source::GzFiles {
        base_urls: vec![url_of(partial.path())],
    };
    let r = fetch_from(
        DatasetName::Mnist,
        cache.path(),
        std::slice::from_ref(&broken),
        &files,
        FetchOptions::default(),
    );
    expect_err(r, &["t10k-labels-idx1-ubyte.gz"]);
    assert_eq!(
        tree(cache.path()),
        Vec::<PathBuf>::new(),
        "three good files must not land alone"
    );
    // The first mirror of a route that fails falls through to the next mirror, and a failed
    // route falls through to the next route.
    let good = Source::GzFiles {
        base_urls: vec![url_of(partial.path()), url_of(mirror.path())],
    };
    let report = fetch_from(
        DatasetName::Mnist,
        cache.path(),
        &[broken, good],
        &files,
        FetchOptions::default(),
    )
    .unwrap();
    assert_eq!(report.files.len(), 4);
}

#[test]
fn a_corrupt_cached_copy_is_replaced_including_its_raw_twin() {
    let (mirror, files) = mnist_mirror();
    let cache = tempfile::tempdir().unwrap();
    let dir = cache.path().join("mnist");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("train-images-idx3-ubyte"), b"garbage").unwrap();
    let routes = [Source::GzFiles {
        base_urls: vec![url_of(mirror.path())],
    }];
    fetch_from(
        DatasetName::Mnist,
        cache.path(),
        &routes,
        &files,
        FetchOptions::default(),
    )
    .unwrap();
    assert!(!dir.join("train-images-idx3-ubyte").exists());
    assert_eq!(
        Dataset::load(DatasetName::Mnist, Split::Train, cache.path())
            .unwrap()
            .len(),
        50
    );
}

/// A CIFAR-100 binary tarball (constant pixels so it compresses fast) and its sha256.
fn cifar100_tarball(dir: &Path, skip_member: Option<&str>) -> (PathBuf, String) {
    let mut builder = tar::Builder::new(flate2::write::GzEncoder::new(
        Vec::new(),
        flate2::Compression::fast(),
    ));
    let record = |i: usize| {
        let mut r = vec![((i % 100) / 5) as u8, (i % 100) as u8];
        r.resize(3074, 128);
        r
    };
    let members: [(&str, Vec<u8>); 4] = [
        ("train.bin", (0..50_000).flat_map(record).collect()),
        ("test.bin", (0..10_000).flat_map(record).collect()),
        ("fine_label_names.txt", b"apple\n".to_vec()),
        ("coarse_label_names.txt", b"aquatic_mammals\n".to_vec()),
    ];
    for (name, data) in members.iter().filter(|(n, _)| Some(*n) != skip_member) {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        builder
            .append_data(&mut h, format!("cifar-100-binary/{name}"), &data[..])
            .unwrap();
    }
    let bytes = builder.into_inner().unwrap().finish().unwrap();
    let path = dir.join("cifar-100-binary.tar.gz");
    std::fs::write(&path, &bytes).unwrap();
    (path, sha256_hex(&bytes))
}

fn cifar100_route(archive: &Path, sha256: String) -> Vec<Source> {
    let Source::TarGz { members, .. } = mpsnn::data::sources(DatasetName::Cifar100).remove(0)
    else {
        panic!("CIFAR-100's first route is the tarball");
    };
    vec![Source::TarGz {
        url: format!("file://{}", archive.display()),
        sha256,
        members,
    }]
}

#[test]
fn tarball_route_verifies_the_archive_and_extracts_members() {
    let src = tempfile::tempdir().unwrap();
    let (archive, sha) = cifar100_tarball(src.path(), None);
    let files = mpsnn::data::data_files(DatasetName::Cifar100);
    let opts = FetchOptions::default();

    let cache = tempfile::tempdir().unwrap();
    let bad = cifar100_route(&archive, "f".repeat(64));
    let e = expect_err(
        fetch_from(DatasetName::Cifar100, cache.path(), &bad, &files, opts),
        &["cifar-100-binary.tar.gz", "sha256 mismatch"],
    );
    assert!(matches!(e, Error::BadFile { .. }));
    assert_eq!(tree(cache.path()), Vec::<PathBuf>::new());

    let report = fetch_from(
        DatasetName::Cifar100,
        cache.path(),
        &cifar100_route(&archive, sha),
        &files,
        opts,
    )
    .unwrap();
    assert_eq!(report.files.len(), 4);
    let test = Dataset::load(DatasetName::Cifar100, Split::Test, cache.path()).unwrap();
    assert_eq!((test.len(), test.label(42)), (10_000, 42));

    let (short, sha) = cifar100_tarball(src.path(), Some("train.bin"));
    let cache = tempfile::tempdir().unwrap();
    let r = fetch_from(
        DatasetName::Cifar100,
        cache.path(),
        &cifar100_route(&short, sha),
        &files,
        opts,
    );
    expect_err(
        r,
        &[
            "cifar-100-binary.tar.gz",
            "archive lacks cifar-100-binary/train.bin",
        ],
    );
    assert_eq!(tree(cache.path()), Vec::<PathBuf>::new());
}

#[test]
fn nmnist_fetch_explains_the_manual_route() {
    let cache = tempfile::tempdir().unwrap();
    let into = format!("{}/nmnist/", cache.path().display());
    let r = fetch(DatasetName::Nmnist, cache.path(), FetchOptions::default());
    let e = expect_err(r, &["Train.zip", &into]);
    assert!(matches!(e, Error::DataMissing(_)));
}

#[test]
fn list_reports_presence_per_split() {
    let root = tempfile::tempdir().unwrap();
    write_idx_split(&root.path().join("mnist"), "train", 5, true, 1);
    let nm = root.path().join("nmnist-small");
    std::fs::create_dir_all(&nm).unwrap();
    std::fs::write(nm.join("train1K.txt"), "1 5\n").unwrap();
    let status = list(root.path());
    assert_eq!(status.len(), 5);
    let mnist = &status[0];
    assert_eq!(
        (mnist.name, mnist.dir.as_deref()),
        (
            DatasetName::Mnist,
            Some(root.path().join("mnist").as_path())
        )
    );
    assert_eq!(mnist.train, SplitStatus::Present);
    assert_eq!(
        mnist.test,
        SplitStatus::Missing("missing t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte".into())
    );
    assert!(matches!(&status[2].train, SplitStatus::Missing(m) if m.contains("cifar10")));
    assert_eq!(
        (status[4].train.clone(), status[4].dir.is_some()),
        (SplitStatus::Present, true)
    );
    let hint = how_to_obtain(DatasetName::FashionMnist, root.path());
    assert!(
        hint.contains("mpsnn data fetch fashion-mnist") && hint.contains("dataset-fashion-mnist")
    );
    assert!(!hint.contains('\n'));
}

#[test]
fn data_root_prefers_the_flag_then_the_environment_then_the_cache() {
    // The only test in this binary that touches the environment.
    std::env::set_var("MPSNN_DATA", "/from/env");
    assert_eq!(
        resolve_data_root(Some(Path::new("/from/flag"))),
        PathBuf::from("/from/flag")
    );
    assert_eq!(resolve_data_root(None), PathBuf::from("/from/env"));
    std::env::set_var("MPSNN_DATA", "");
    std::env::set_var("XDG_CACHE_HOME", "/xdg");
    let root = resolve_data_root(None);
    if cfg!(target_os = "linux") {
        assert_eq!(root, PathBuf::from("/xdg/mpsnn/data"));
    }
    assert!(root.ends_with("mpsnn/data"));
    std::env::remove_var("MPSNN_DATA");
}

#[test]
fn real_files_pass_the_pinned_checksums() {
    // ../shared/data is read-only: fetch must recognize it as complete without writing.
    let real = support::real_root();
    for name in [DatasetName::Mnist, DatasetName::Cifar10] {
        let report = fetch(name, &real, FetchOptions::default()).unwrap();
        assert_eq!(report.route, "already present", "{name}");
        assert_eq!(report.dir, real.join(name.folders()[0]));
    }
}
