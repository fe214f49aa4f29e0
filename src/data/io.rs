//! File access shared by the loaders: finding a file stored raw or gzipped, reading it whole
//! (decompressing `.gz` in memory), and hashing decompressed bytes.

use crate::error::{Error, Result};
use flate2::read::MultiGzDecoder;
use sha2::{Digest, Sha256};
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

/// `<dir>/<name>` if it exists, else `<dir>/<name>.gz`, else `None`. The raw file wins so a
/// user who unpacked a file by hand gets what they unpacked.
pub(crate) fn locate(dir: &Path, name: &str) -> Option<PathBuf> {
    let raw = dir.join(name);
    if raw.is_file() {
        return Some(raw);
    }
    let gz = dir.join(format!("{name}.gz"));
    gz.is_file().then_some(gz)
}

/// True when the path names a gzip file (by extension: CIFAR records have no magic, and a
/// label byte of 0x1f followed by a pixel of 0x8b would fool a magic-byte sniff).
pub(crate) fn is_gz(path: &Path) -> bool {
    path.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("gz"))
}

/// The whole file, gunzipped when its name ends in `.gz`.
///
/// A decompression failure (truncated stream, bad CRC, not gzip at all) is
/// [`Error::BadFile`] naming the file.
pub(crate) fn read_maybe_gz(path: &Path) -> Result<Vec<u8>> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    if !is_gz(path) {
        return Ok(bytes);
    }
    // The gzip trailer's ISIZE (length mod 2^32) sizes the output in one allocation; it is only
    // a hint, bounded by deflate's maximum expansion so a hostile trailer cannot force a huge
    // allocation.
    let hint = bytes
        .len()
        .checked_sub(4)
        .map(|n| u32::from_le_bytes([bytes[n], bytes[n + 1], bytes[n + 2], bytes[n + 3]]) as usize)
        .unwrap_or(0)
        .min(bytes.len().saturating_mul(1032));
    let mut out = Vec::with_capacity(hint);
    MultiGzDecoder::new(&bytes[..])
        .read_to_end(&mut out)
        .map_err(|e| Error::bad_file(path, format!("corrupt or truncated gzip stream ({e})")))?;
    Ok(out)
}

/// sha256 (lower-case hex) of the file's decompressed content, streamed (no whole-file buffer).
pub(crate) fn sha256_content(path: &Path) -> Result<String> {
    sha256_file(path, is_gz(path))
}

/// sha256 (lower-case hex) of the raw file bytes, streamed.
pub(crate) fn sha256_raw(path: &Path) -> Result<String> {
    sha256_file(path, false)
}

fn sha256_file(path: &Path, gunzip: bool) -> Result<String> {
    let f = BufReader::with_capacity(1 << 20, File::open(path).map_err(|e| Error::io(path, e))?);
    let mut reader: Box<dyn Read> = if gunzip {
        Box::new(MultiGzDecoder::new(f))
    } else {
        Box::new(f)
    };
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = reader.read(&mut buf).map_err(|e| match gunzip {
            true => Error::bad_file(path, format!("corrupt or truncated gzip stream ({e})")),
            false => Error::io(path, e),
        })?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex(&hasher.finalize()))
}

/// Lower-case hex of `bytes`.
pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::write::GzEncoder;
    use flate2::Compression;
    use std::io::Write;

    fn gz(data: &[u8]) -> Vec<u8> {
        let mut e = GzEncoder::new(Vec::new(), Compression::fast());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn gz_and_raw_read_and_hash_the_same_content() {
        let dir = std::env::temp_dir().join(format!("mpsnn-io-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let data: Vec<u8> = (0..100_000u32).map(|i| (i * 7 % 251) as u8).collect();
        std::fs::write(dir.join("a"), &data).unwrap();
        std::fs::write(dir.join("b.gz"), gz(&data)).unwrap();
        assert_eq!(locate(&dir, "b").unwrap(), dir.join("b.gz"));
        assert_eq!(read_maybe_gz(&dir.join("b.gz")).unwrap(), data);
        assert_eq!(
            sha256_content(&dir.join("a")).unwrap(),
            sha256_content(&dir.join("b.gz")).unwrap()
        );
        assert_eq!(
            sha256_raw(&dir.join("a")).unwrap(),
            sha256_content(&dir.join("a")).unwrap()
        );
        // sha256("abc") from FIPS 180-2.
        std::fs::write(dir.join("abc"), b"abc").unwrap();
        assert_eq!(
            sha256_raw(&dir.join("abc")).unwrap(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
