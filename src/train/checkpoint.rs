//! Checkpoint files: model spec, weights and buffers (BN statistics, θ/τ via k/w, μ), optimizer
//! state and training progress, in one self-validating file written atomically.
//!
//! Layout (little-endian):
//! ```text
//! b"MPSNNCKP"  u32 version  u64 header_len  header (JSON)  tensor data (f32)  u32 CRC32
//! ```
//! The JSON header holds the spec, free-form metadata (training config and progress) and the
//! tensor table `[{name, shape}]` in data order. The CRC covers every byte before it, so a
//! truncated or bit-flipped file is rejected before anything is loaded.

use crate::error::{Error, Result};
use crate::nn::{ModelSpec, StateDict};
use crate::tensor::Tensor;
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::Path;

const MAGIC: &[u8; 8] = b"MPSNNCKP";
/// Current checkpoint format version.
pub const VERSION: u32 = 1;

/// Everything a checkpoint holds.
#[derive(Clone, Debug, PartialEq)]
pub struct Checkpoint {
    /// The model's spec (so `eval`/`export` need nothing else).
    pub spec: ModelSpec,
    /// Parameters and buffers of the model, by name.
    pub model: StateDict,
    /// Optimizer state (may be empty, e.g. for exported weights).
    pub optimizer: StateDict,
    /// Training configuration and progress (epoch, step, seed, metrics so far).
    pub meta: serde_json::Value,
}

#[derive(Serialize, Deserialize)]
struct Header {
    spec: ModelSpec,
    meta: serde_json::Value,
    tensors: Vec<TensorEntry>,
}

#[derive(Serialize, Deserialize)]
struct TensorEntry {
    name: String,
    shape: Vec<usize>,
}

impl Checkpoint {
    /// Serializes the checkpoint into bytes.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let tensors: Vec<(&String, &Tensor)> =
            self.model.iter().chain(self.optimizer.iter()).collect();
        let header = Header {
            spec: self.spec.clone(),
            meta: self.meta.clone(),
            tensors: tensors
                .iter()
                .map(|(name, t)| TensorEntry {
                    name: (*name).clone(),
                    shape: t.shape().to_vec(),
                })
                .collect(),
        };
        let header = serde_json::to_vec(&header)
            .map_err(|e| Error::InvalidArgument(format!("checkpoint header: {e}")))?;
        let data_len: usize = tensors.iter().map(|(_, t)| t.len() * 4).sum();
        let mut out = Vec::with_capacity(24 + header.len() + data_len);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&VERSION.to_le_bytes());
        out.extend_from_slice(&(header.len() as u64).to_le_bytes());
        out.extend_from_slice(&header);
        for (_, t) in &tensors {
            for v in t.data() {
                out.extend_from_slice(&v.to_le_bytes());
            }
        }
        let crc = crc32fast::hash(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        Ok(out)
    }

    /// Parses bytes written by [`Checkpoint::to_bytes`]; `path` is only used in errors.
    pub fn from_bytes(bytes: &[u8], path: &Path) -> Result<Checkpoint> {
        let bad = |reason: String| Error::bad_file(path, reason);
        if bytes.len() < 8 || &bytes[..8] != MAGIC {
            return Err(bad("not an mpsnn checkpoint (bad magic)".into()));
        }
        if bytes.len() < 24 {
            return Err(bad(format!("truncated: {} bytes", bytes.len())));
        }
        let version = u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes"));
        if version != VERSION {
            return Err(bad(format!(
                "unsupported checkpoint version {version} (this build reads {VERSION})"
            )));
        }
        let (body, crc_bytes) = bytes.split_at(bytes.len() - 4);
        let stored = u32::from_le_bytes(crc_bytes.try_into().expect("4 bytes"));
        let header_len = u64::from_le_bytes(bytes[12..20].try_into().expect("8 bytes"));
        let header_end = 20usize
            .checked_add(usize::try_from(header_len).unwrap_or(usize::MAX))
            .filter(|&end| end <= body.len())
            .ok_or_else(|| {
                bad(format!(
                    "truncated: header of {header_len} bytes does not fit"
                ))
            })?;
        if crc32fast::hash(body) != stored {
            return Err(bad(
                "checksum mismatch: the file is corrupt or truncated".into()
            ));
        }
        let header: Header = serde_json::from_slice(&bytes[20..header_end])
            .map_err(|e| bad(format!("bad header: {e}")))?;
        let mut data = &body[header_end..];
        let (mut model, mut optimizer) = (StateDict::new(), StateDict::new());
        for entry in header.tensors {
            let n: usize = entry.shape.iter().product();
            if data.len() < n * 4 {
                return Err(bad(format!("truncated tensor {:?}", entry.name)));
            }
            let (chunk, rest) = data.split_at(n * 4);
            data = rest;
            let values = chunk
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")))
                .collect();
            let t = Tensor::from_vec(&entry.shape, values)?;
            if entry.name.starts_with("optim.") {
                optimizer.insert(entry.name, t);
            } else {
                model.insert(entry.name, t);
            }
        }
        if !data.is_empty() {
            return Err(bad(format!("{} unexpected trailing bytes", data.len())));
        }
        Ok(Checkpoint {
            spec: header.spec,
            model,
            optimizer,
            meta: header.meta,
        })
    }

    /// Writes the checkpoint atomically: a temporary file in the same folder, flushed to disk,
    /// then renamed over `path`. A crash leaves the previous file intact.
    pub fn save(&self, path: &Path) -> Result<()> {
        let bytes = self.to_bytes()?;
        write_atomic(path, &bytes)
    }

    /// Reads and validates a checkpoint file.
    pub fn load(path: &Path) -> Result<Checkpoint> {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        Checkpoint::from_bytes(&bytes, path)
    }
}

/// Writes `bytes` to `path` through a temporary file and a rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let file_name = path
        .file_name()
        .ok_or_else(|| Error::InvalidArgument(format!("not a file path: {}", path.display())))?;
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        file_name.to_string_lossy(),
        std::process::id()
    ));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::io(path, e));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Checkpoint {
        let spec: ModelSpec = serde_json::from_str(
            r#"{"name": "t", "input": [1, 2, 2], "classes": 2,
                "layers": [{"type": "flatten", "name": "f"},
                           {"type": "linear", "name": "fc", "in_features": 4, "out_features": 2}]}"#,
        )
        .unwrap();
        let mut model = StateDict::new();
        model.insert(
            "fc.weight".into(),
            Tensor::from_vec(&[2, 4], (0..8).map(|i| i as f32 * 0.25).collect()).unwrap(),
        );
        model.insert(
            "fc.bias".into(),
            Tensor::from_vec(&[2], vec![-1.0, 1.5]).unwrap(),
        );
        let mut optimizer = StateDict::new();
        optimizer.insert(
            "optim.steps".into(),
            Tensor::from_vec(&[2], vec![3.0, 0.0]).unwrap(),
        );
        Checkpoint {
            spec,
            model,
            optimizer,
            meta: serde_json::json!({"epoch": 2}),
        }
    }

    #[test]
    fn round_trip() {
        let c = sample();
        let bytes = c.to_bytes().unwrap();
        assert_eq!(Checkpoint::from_bytes(&bytes, Path::new("x")).unwrap(), c);
    }

    #[test]
    fn every_truncation_and_bit_flip_is_an_error() {
        let bytes = sample().to_bytes().unwrap();
        for len in 0..bytes.len() {
            assert!(
                Checkpoint::from_bytes(&bytes[..len], Path::new("x")).is_err(),
                "len {len}"
            );
        }
        for i in (0..bytes.len()).step_by(7) {
            let mut flipped = bytes.clone();
            flipped[i] ^= 0x10;
            assert!(
                Checkpoint::from_bytes(&flipped, Path::new("x")).is_err(),
                "flip at {i}"
            );
        }
    }

    #[test]
    fn errors_name_the_problem() {
        let mut bytes = sample().to_bytes().unwrap();
        bytes[8] = 9;
        let msg = Checkpoint::from_bytes(&bytes, Path::new("run/ck.ckpt"))
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("run/ck.ckpt") && msg.contains("version 9"),
            "{msg}"
        );
        let msg = Checkpoint::from_bytes(b"hello world, not a checkpoint", Path::new("f"))
            .unwrap_err()
            .to_string();
        assert!(msg.contains("bad magic"), "{msg}");
    }

    #[test]
    fn atomic_save_replaces_and_leaves_no_temp_files() {
        let dir = std::env::temp_dir().join(format!("mpsnn-ckpt-test-{}", std::process::id()));
        let path = dir.join("a.ckpt");
        let c = sample();
        c.save(&path).unwrap();
        c.save(&path).unwrap();
        assert_eq!(Checkpoint::load(&path).unwrap(), c);
        let names: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
