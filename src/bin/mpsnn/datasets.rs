//! Connects datasets to the trainer: opening (and, if missing, fetching) splits, and the
//! [`DataSource`] the run driver consumes.

use mpsnn::data::{
    fetch, resolve_data_root, Augmentation, Dataset, DatasetName, FetchOptions, FetchReport,
    Loader, LoaderConfig, Split,
};
use mpsnn::train::run::{Batches, DataSource};
use mpsnn::{Error, Result};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Test-time batch size: larger batches amortize per-layer overhead; no gradients are kept.
pub const EVAL_BATCH: usize = 256;

/// Parses a dataset name.
pub fn dataset_name(name: &str) -> Result<DatasetName> {
    name.parse()
}

/// The data root from `--data-dir`, `$MPSNN_DATA` or the cache folder.
pub fn data_root(cli: Option<&Path>) -> PathBuf {
    resolve_data_root(cli)
}

/// Loads `split` of `name`; if the dataset is missing, fetches it into `root` first (printing
/// what it does on stderr) and tries once more.
pub fn load(
    name: DatasetName,
    split: Split,
    root: &Path,
    limit: Option<usize>,
) -> Result<Arc<Dataset>> {
    let mut ds = match Dataset::load(name, split, root) {
        Err(Error::DataMissing(why)) => {
            eprintln!(
                "{why}\nfetching {} into {} ...",
                name.as_str(),
                root.display()
            );
            let report = fetch(name, root, FetchOptions::default())?;
            eprintln!("{}", describe_fetch(&report));
            Dataset::load(name, split, root)?
        }
        other => other?,
    };
    if let Some(n) = limit {
        ds.truncate(n);
    }
    Ok(Arc::new(ds))
}

/// Training and test splits batched for a run.
pub struct RunData {
    /// Training split.
    pub train: Arc<Dataset>,
    /// Test split.
    pub test: Arc<Dataset>,
    /// Training batch size.
    pub batch_size: usize,
    /// Timesteps (frames per event sample).
    pub timesteps: usize,
    /// Run seed (shuffle and augmentation).
    pub seed: u64,
    /// Training-set augmentation (`None` = the dataset's default).
    pub augment: Option<Augmentation>,
}

impl DataSource for RunData {
    fn train(&self, epoch: usize) -> Result<Batches<'_>> {
        let config = LoaderConfig {
            augment: self.augment,
            ..LoaderConfig::train(self.batch_size, self.timesteps, self.seed, epoch as u64)
        };
        let loader = Loader::new(Arc::clone(&self.train), &config)?;
        Ok(Box::new(loader.map(|b| Ok((b.input, b.labels)))))
    }

    fn test(&self) -> Result<Batches<'_>> {
        test_batches(&self.test, self.timesteps)
    }

    fn train_batches(&self) -> usize {
        self.train.len() / self.batch_size
    }
}

/// In-order, unaugmented test batches.
pub fn test_batches(test: &Arc<Dataset>, timesteps: usize) -> Result<Batches<'static>> {
    let loader = Loader::new(Arc::clone(test), &LoaderConfig::new(EVAL_BATCH, timesteps))?;
    Ok(Box::new(loader.map(|b| Ok((b.input, b.labels)))))
}

/// One line saying where a fetch put the data and how it got there.
pub fn describe_fetch(report: &FetchReport) -> String {
    format!(
        "{} ({}; {} files written)",
        report.dir.display(),
        report.route,
        report.files.len()
    )
}
