//! IDX files (MNIST, Fashion-MNIST): a big-endian header `00 00 08 <ndim>` (unsigned bytes),
//! `ndim` u32 dimensions, then the row-major payload.

use super::io::{locate, read_maybe_gz};
use crate::error::{Error, Result};
use std::path::{Path, PathBuf};

/// A decoded IDX array of unsigned bytes.
#[derive(Debug)]
pub(crate) struct IdxArray {
    /// Dimensions from the header, outermost first.
    pub dims: Vec<usize>,
    /// The payload, `dims.iter().product()` bytes.
    pub data: Vec<u8>,
}

/// Parses `bytes` (the decompressed content of `path`) as an IDX array with `ndim` dimensions.
///
/// Fails with [`Error::BadFile`] on a wrong magic, a short header, or a payload that does not
/// match the header's dimensions (truncated file, or a count in the header that disagrees with
/// the file size).
pub(crate) fn parse_idx(path: &Path, mut bytes: Vec<u8>, ndim: u8) -> Result<IdxArray> {
    let expected_magic = 0x0800 | u32::from(ndim);
    if bytes.len() < 4 {
        return Err(Error::bad_file(
            path,
            format!(
                "truncated: {} bytes, shorter than the IDX magic",
                bytes.len()
            ),
        ));
    }
    let magic = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
    if magic != expected_magic {
        return Err(Error::bad_file(
            path,
            format!(
                "bad magic 0x{magic:08x}, expected 0x{expected_magic:08x} (IDX, u8, {ndim} dims)"
            ),
        ));
    }
    let header = 4 + 4 * usize::from(ndim);
    if bytes.len() < header {
        return Err(Error::bad_file(
            path,
            format!(
                "truncated: {} bytes, the IDX header needs {header}",
                bytes.len()
            ),
        ));
    }
    let dims: Vec<usize> = bytes[4..header]
        .chunks_exact(4)
        .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]) as usize)
        .collect();
    let declared = dims
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| Error::bad_file(path, format!("header dimensions {dims:?} overflow")))?;
    let have = bytes.len() - header;
    if have != declared {
        let what = if have < declared {
            "truncated"
        } else {
            "wrong count"
        };
        return Err(Error::bad_file(
            path,
            format!(
                "{what}: header declares {} ({declared} data bytes) but the file holds {have}",
                dims_str(&dims)
            ),
        ));
    }
    bytes.drain(..header);
    Ok(IdxArray { dims, data: bytes })
}

fn dims_str(dims: &[usize]) -> String {
    dims.iter()
        .map(|d| d.to_string())
        .collect::<Vec<_>>()
        .join("x")
}

/// Images `[N, H, W]` and labels `[N]` of one IDX split, checked against each other.
#[derive(Debug)]
pub(crate) struct IdxSplit {
    /// `N·H·W` pixels, image-major.
    pub pixels: Vec<u8>,
    /// `N` labels, each `< classes`.
    pub labels: Vec<u8>,
}

/// Loads `<images>` and `<labels>` (raw or `.gz`) from `dir` and checks that the images are
/// `hw` pixels, the counts agree and every label is below `classes`.
pub(crate) fn load_idx_split(
    dir: &Path,
    images: &str,
    labels: &str,
    hw: [usize; 2],
    classes: usize,
) -> Result<IdxSplit> {
    let find = |name: &str| -> Result<PathBuf> {
        locate(dir, name).ok_or_else(|| {
            Error::DataMissing(format!(
                "{} not found (nor {name}.gz)",
                dir.join(name).display()
            ))
        })
    };
    let (img_path, lbl_path) = (find(images)?, find(labels)?);
    let (img, lbl) = rayon::join(
        || read_maybe_gz(&img_path).and_then(|b| parse_idx(&img_path, b, 3)),
        || read_maybe_gz(&lbl_path).and_then(|b| parse_idx(&lbl_path, b, 1)),
    );
    let (img, lbl) = (img?, lbl?);
    if img.dims[1..] != hw {
        return Err(Error::bad_file(
            &img_path,
            format!(
                "images are {}, expected {}",
                dims_str(&img.dims[1..]),
                dims_str(&hw)
            ),
        ));
    }
    if lbl.dims[0] != img.dims[0] {
        return Err(Error::bad_file(
            &lbl_path,
            format!(
                "wrong count: {} labels for {} images in {}",
                lbl.dims[0],
                img.dims[0],
                img_path.file_name().unwrap_or_default().to_string_lossy()
            ),
        ));
    }
    if let Some(i) = lbl.data.iter().position(|&l| usize::from(l) >= classes) {
        return Err(Error::bad_file(
            &lbl_path,
            format!("label {} of sample {i} is not below {classes}", lbl.data[i]),
        ));
    }
    Ok(IdxSplit {
        pixels: img.data,
        labels: lbl.data,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn idx(dims: &[u32], payload: &[u8]) -> Vec<u8> {
        let mut v = vec![0, 0, 8, dims.len() as u8];
        for d in dims {
            v.extend_from_slice(&d.to_be_bytes());
        }
        v.extend_from_slice(payload);
        v
    }

    #[test]
    fn parses_header_and_payload() {
        let a = parse_idx(Path::new("x"), idx(&[2, 2, 3], &[1; 12]), 3).unwrap();
        assert_eq!(a.dims, vec![2, 2, 3]);
        assert_eq!(a.data, vec![1; 12]);
    }

    #[test]
    fn rejects_magic_size_and_overflow() {
        let p = Path::new("f");
        let msg = |r: Result<IdxArray>| r.unwrap_err().to_string();
        assert!(msg(parse_idx(p, idx(&[2], &[0, 1]), 3)).contains("bad magic 0x00000801"));
        assert!(msg(parse_idx(p, vec![0, 0], 1)).contains("truncated"));
        assert!(msg(parse_idx(p, idx(&[3], &[0, 1]), 1)).contains("truncated"));
        assert!(msg(parse_idx(p, idx(&[1], &[0, 1]), 1)).contains("wrong count"));
        let huge = idx(&[u32::MAX, u32::MAX, u32::MAX], &[]);
        assert!(msg(parse_idx(p, huge, 3)).contains("overflow"));
    }
}
