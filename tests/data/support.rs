//! Writers for small files in the exact on-disk formats, and helpers shared by the data tests.

#![allow(dead_code)] // Each test crate uses a different subset.

use flate2::write::GzEncoder;
use flate2::Compression;
use mpsnn::Error;
use std::io::Write;
use std::path::{Path, PathBuf};

/// The real data root: `$MPSNN_DATA`, else `../shared/data` beside the package.
pub fn real_root() -> PathBuf {
    std::env::var_os("MPSNN_DATA")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data"))
}

/// An empty-to-be scratch folder `mpsnn-<group>-<pid>-<name>` in the temp dir (removed if a
/// previous run left it).
pub fn scratch(group: &str, name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("mpsnn-{group}-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// The JSON object every `mpsnn` command prints as its last stdout line.
pub fn last_json(stdout: &str) -> serde_json::Value {
    let line = stdout.lines().last().expect("some stdout");
    serde_json::from_str(line).unwrap_or_else(|e| panic!("last line is not JSON ({e}): {line}"))
}

/// gzip of `data`.
pub fn gz(data: &[u8]) -> Vec<u8> {
    let mut e = GzEncoder::new(Vec::new(), Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

/// An IDX file of unsigned bytes with the given dimensions.
pub fn idx_bytes(dims: &[u32], payload: &[u8]) -> Vec<u8> {
    let mut v = vec![0, 0, 8, dims.len() as u8];
    for d in dims {
        v.extend_from_slice(&d.to_be_bytes());
    }
    v.extend_from_slice(payload);
    v
}

/// Deterministic pseudo-random bytes (xorshift), so synthetic images are not constant.
pub fn noise(n: usize, seed: u64) -> Vec<u8> {
    let mut s = seed | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 24) as u8
        })
        .collect()
}

/// Synthetic IDX images + labels (`n` 28×28 images, label `i % 10`), returned as
/// `(pixels, labels)`; written as `<prefix>-images-idx3-ubyte[.gz]` and
/// `<prefix>-labels-idx1-ubyte[.gz]` in `dir`.
pub fn write_idx_split(
    dir: &Path,
    prefix: &str,
    n: usize,
    gzip: bool,
    seed: u64,
) -> (Vec<u8>, Vec<u8>) {
    std::fs::create_dir_all(dir).unwrap();
    let pixels = noise(n * 784, seed);
    let labels: Vec<u8> = (0..n).map(|i| (i % 10) as u8).collect();
    let img = idx_bytes(&[n as u32, 28, 28], &pixels);
    let lbl = idx_bytes(&[n as u32], &labels);
    let suffix = if gzip { ".gz" } else { "" };
    let enc = |b: Vec<u8>| if gzip { gz(&b) } else { b };
    std::fs::write(
        dir.join(format!("{prefix}-images-idx3-ubyte{suffix}")),
        enc(img),
    )
    .unwrap();
    std::fs::write(
        dir.join(format!("{prefix}-labels-idx1-ubyte{suffix}")),
        enc(lbl),
    )
    .unwrap();
    (pixels, labels)
}

/// One N-MNIST event record.
pub fn event(x: u8, y: u8, p: u8, t: u32) -> [u8; 5] {
    [
        x,
        y,
        (p << 7) | ((t >> 16) as u8 & 0x7F),
        (t >> 8) as u8,
        t as u8,
    ]
}

/// Asserts `r` is an error whose one-line message contains every `needle`, and returns it.
#[track_caller]
pub fn expect_err<T: std::fmt::Debug>(r: Result<T, Error>, needles: &[&str]) -> Error {
    let e = r.expect_err("expected an error");
    let msg = e.to_string();
    assert!(!msg.contains('\n'), "error is not one line: {msg}");
    for n in needles {
        assert!(msg.contains(n), "error {msg:?} lacks {n:?}");
    }
    e
}
