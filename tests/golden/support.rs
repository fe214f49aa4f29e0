//! Loading golden files (`../shared/golden/README.md`) and comparing against them.

// Shared by every checker; not each checker uses each helper.
#![allow(dead_code)]

use mpsnn::Tensor;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// One tensor of a golden file: shape + flat row-major f64 data.
#[derive(Deserialize)]
pub struct GoldenTensor {
    pub shape: Vec<usize>,
    pub data: Vec<f64>,
}

/// A golden file.
#[derive(Deserialize)]
pub struct Golden {
    pub kind: String,
    #[serde(default)]
    pub source: String,
    #[serde(default)]
    pub config: serde_json::Value,
    #[serde(default)]
    pub tensors: BTreeMap<String, GoldenTensor>,
    #[serde(default)]
    pub scalars: BTreeMap<String, f64>,
    #[serde(skip)]
    pub path: PathBuf,
}

/// What a check returns: `Err` carries a readable description of the first mismatch.
pub type Check = Result<(), String>;

impl Golden {
    pub fn load(path: &Path) -> Result<Golden, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let mut g: Golden =
            serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        g.path = path.to_path_buf();
        Ok(g)
    }

    /// The file name, for messages.
    pub fn file(&self) -> String {
        self.path
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned()
    }

    /// A tensor as f32.
    pub fn tensor(&self, name: &str) -> Result<Tensor, String> {
        let t = self
            .tensors
            .get(name)
            .ok_or_else(|| format!("missing tensor {name:?}"))?;
        Tensor::from_vec(&t.shape, t.data.iter().map(|&v| v as f32).collect())
            .map_err(|e| format!("tensor {name:?}: {e}"))
    }

    /// True if the file has tensor `name`.
    pub fn has(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }

    /// A scalar.
    pub fn scalar(&self, name: &str) -> Result<f64, String> {
        self.scalars
            .get(name)
            .copied()
            .ok_or_else(|| format!("missing scalar {name:?}"))
    }

    /// A config value as f64 / usize / bool / str.
    pub fn cfg_f64(&self, key: &str) -> Result<f64, String> {
        self.config[key]
            .as_f64()
            .ok_or_else(|| format!("config.{key} missing or not a number"))
    }
    pub fn cfg_usize(&self, key: &str) -> Result<usize, String> {
        self.config[key]
            .as_u64()
            .map(|v| v as usize)
            .ok_or_else(|| format!("config.{key} missing or not an integer"))
    }
    pub fn cfg_bool(&self, key: &str) -> Result<bool, String> {
        self.config[key]
            .as_bool()
            .ok_or_else(|| format!("config.{key} missing or not a bool"))
    }
    pub fn cfg_str(&self, key: &str) -> Result<&str, String> {
        self.config[key]
            .as_str()
            .ok_or_else(|| format!("config.{key} missing or not a string"))
    }

    /// `(abs, rel)` tolerance: `config.tolerance` if given (a number, or `{abs, rel}`), else the
    /// README's `1e-4 + 1e-4·|b|`.
    pub fn tolerance(&self) -> (f64, f64) {
        match &self.config["tolerance"] {
            serde_json::Value::Number(n) => {
                let t = n.as_f64().unwrap_or(1e-4);
                (t, t)
            }
            serde_json::Value::Object(o) => (
                o.get("abs").and_then(|v| v.as_f64()).unwrap_or(1e-4),
                o.get("rel").and_then(|v| v.as_f64()).unwrap_or(1e-4),
            ),
            _ => (1e-4, 1e-4),
        }
    }

    /// Compares `actual` (with its shape) to tensor `name` within the file's tolerance.
    pub fn expect_tensor(&self, name: &str, actual: &Tensor) -> Check {
        let want = self
            .tensors
            .get(name)
            .ok_or_else(|| format!("missing tensor {name:?}"))?;
        if actual.shape() != &want.shape[..] {
            return Err(format!(
                "{name}: shape {:?}, expected {:?}",
                actual.shape(),
                want.shape
            ));
        }
        self.expect_values(name, actual.data(), &want.data)
    }

    /// Compares a flat slice to tensor `name`'s data (ignoring shape).
    pub fn expect_data(&self, name: &str, actual: &[f32]) -> Check {
        let want = self
            .tensors
            .get(name)
            .ok_or_else(|| format!("missing tensor {name:?}"))?;
        self.expect_values(name, actual, &want.data)
    }

    /// Compares a scalar.
    pub fn expect_scalar(&self, name: &str, actual: f64) -> Check {
        let want = self.scalar(name)?;
        self.expect_values(name, &[actual as f32], &[want])
    }

    fn expect_values(&self, name: &str, actual: &[f32], want: &[f64]) -> Check {
        if actual.len() != want.len() {
            return Err(format!(
                "{name}: {} values, expected {}",
                actual.len(),
                want.len()
            ));
        }
        let (abs, rel) = self.tolerance();
        let mut worst: Option<(usize, f64, f64)> = None;
        let mut bad = 0;
        for (i, (&a, &b)) in actual.iter().zip(want).enumerate() {
            let a = a as f64;
            let ok = (a - b).abs() <= abs + rel * b.abs();
            if !ok {
                bad += 1;
                if worst.is_none_or(|(_, wa, wb)| (a - b).abs() > (wa - wb).abs()) {
                    worst = Some((i, a, b));
                }
            }
        }
        match worst {
            None => Ok(()),
            Some((i, a, b)) => Err(format!(
                "{name}: {bad} of {} values out of tolerance; worst at [{i}]: got {a}, expected {b}",
                actual.len()
            )),
        }
    }
}

/// The folder named by `MPSNN_GOLDEN`, else `../shared/golden` beside the checkout.
pub fn golden_dir() -> PathBuf {
    std::env::var_os("MPSNN_GOLDEN")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/golden"))
}
