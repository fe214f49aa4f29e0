//! Datasets, encoding, augmentation and batching.
//!
//! - [`Dataset::load`] reads one split of MNIST / Fashion-MNIST (IDX), CIFAR-10 / CIFAR-100
//!   (binary version) or N-MNIST (events) from a data root, keeping images as `u8` and events as
//!   their raw records. Every file is checked (magic, size, record count, label range); a bad one
//!   is a one-line [`Error::BadFile`] naming it, a missing one [`Error::DataMissing`] with the
//!   path and how to obtain it.
//! - [`Loader`] turns a dataset into [`Batch`]es on a background thread: static images
//!   normalized with the dataset's mean/std into `[B, C, H, W]` (direct encoding: the network
//!   repeats them `T` times), CIFAR training images randomly cropped and flipped; event samples
//!   binned into `T` frames, `[T·B, 2, 34, 34]` time-major (see [`nmnist`] for the binning).
//! - [`resolve_data_root`], [`fetch`], [`list`] and [`how_to_obtain`] are what the CLI's
//!   `--data-dir` and `mpsnn data` call.
//!
//! Layout under a data root: `mnist/`, `fashion-mnist/`, `cifar10/`, `cifar100/` (files raw or
//! `.gz`; CIFAR also inside the tarball's `cifar-10-batches-bin/` / `cifar-100-binary/`), and
//! `nmnist/` (`Train/<digit>/*.bin`) or `nmnist-small/` (`<id>.bs2` + label lists).
//!
//! Determinism: the shuffle order is [`epoch_permutation`]`(n, seed, epoch)` and the
//! augmentation of sample `i` is [`Augmentation::params`]`(seed, epoch, i)`, both pure functions, so
//! a resumed run or a multi-process run sees identical data.

use crate::error::{Error, Result};
use crate::nn::Encoding;
use std::path::{Path, PathBuf};

mod batch;
mod cifar;
mod encode;
mod fetch;
mod idx;
mod io;
pub mod nmnist;
mod registry;

pub use batch::{Batch, Loader, LoaderConfig};
pub use encode::{augment_params, epoch_permutation, Augment, Augmentation, CROP_PAD, SHIFT_PAD};
pub use fetch::{
    default_cache_dir, fetch, fetch_from, how_to_obtain, list, resolve_data_root, DatasetStatus,
    FetchOptions, FetchReport, SplitStatus,
};
pub use nmnist::Event;
pub use registry::{data_files, sources, DataFile, DatasetName, Source, Split};

/// The samples of a dataset in their compact in-memory form.
#[derive(Clone, Debug)]
enum Samples {
    /// `N` images of `C·H·W` bytes each, CHW, image-major.
    Images { pixels: Vec<u8> },
    /// Raw, validated event records per sample.
    Events(nmnist::EventStore),
}

/// One split of a dataset, loaded and checked. Immutable after loading (share it with
/// `Arc<Dataset>`), except for [`Dataset::truncate`].
#[derive(Clone, Debug)]
pub struct Dataset {
    name: DatasetName,
    split: Split,
    source: PathBuf,
    labels: Vec<u8>,
    samples: Samples,
}

impl Dataset {
    /// Loads `split` of `name` from the data root `root` (the dataset lives in its conventional
    /// subfolder, see the module docs).
    ///
    /// Errors: [`Error::DataMissing`] when the folder or a file is absent (the message names
    /// the path and how to obtain the data), [`Error::BadFile`] when a file is malformed.
    pub fn load(name: DatasetName, split: Split, root: &Path) -> Result<Dataset> {
        // The first folder holding the split wins; if none does, the first existing one is read
        // so the error names what is missing there.
        let existing: Vec<PathBuf> = name
            .folders()
            .iter()
            .map(|f| root.join(f))
            .filter(|d| d.is_dir())
            .collect();
        let dir = existing
            .iter()
            .find(|d| fetch::split_status(name, d, split) == SplitStatus::Present)
            .or(existing.first())
            .cloned()
            .ok_or_else(|| Error::DataMissing(how_to_obtain(name, root)))?;
        let [c, h, w] = name.sample_shape();
        let (labels, samples) = match name {
            DatasetName::Mnist | DatasetName::FashionMnist => {
                let (images, labels) = match split {
                    Split::Train => ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
                    Split::Test => ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
                };
                let s = idx::load_idx_split(&dir, images, labels, [h, w], name.classes())
                    .map_err(|e| with_hint(e, name, root))?;
                (s.labels, Samples::Images { pixels: s.pixels })
            }
            DatasetName::Cifar10 | DatasetName::Cifar100 => {
                let s =
                    cifar::load_cifar(name, &dir, split).map_err(|e| with_hint(e, name, root))?;
                (s.labels, Samples::Images { pixels: s.pixels })
            }
            DatasetName::Nmnist => {
                let (store, labels) =
                    nmnist::load(&dir, split).map_err(|e| with_hint(e, name, root))?;
                (labels, Samples::Events(store))
            }
        };
        debug_assert!(match &samples {
            Samples::Images { pixels } => pixels.len() == labels.len() * c * h * w,
            Samples::Events(s) => s.len() == labels.len(),
        });
        Ok(Dataset {
            name,
            split,
            source: dir,
            labels,
            samples,
        })
    }

    /// Which dataset this is.
    pub fn name(&self) -> DatasetName {
        self.name
    }

    /// Which split this is.
    pub fn split(&self) -> Split {
        self.split
    }

    /// The folder the samples were read from.
    pub fn source(&self) -> &Path {
        &self.source
    }

    /// Number of samples.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// True when there are no samples (only after `truncate(0)`).
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Number of classes (10, or 100 for CIFAR-100).
    pub fn classes(&self) -> usize {
        self.name.classes()
    }

    /// `[C, H, W]` of one image, or of one event frame.
    pub fn sample_shape(&self) -> [usize; 3] {
        self.name.sample_shape()
    }

    /// True for event data: batches carry `T` frames per sample (`[T·B, C, H, W]`).
    pub fn is_event(&self) -> bool {
        self.name.is_event()
    }

    /// The model input encoding this data calls for.
    pub fn encoding(&self) -> Encoding {
        if self.is_event() {
            Encoding::Frames
        } else {
            Encoding::Direct
        }
    }

    /// Class of sample `i`.
    ///
    /// # Panics
    /// If `i >= len()`.
    pub fn label(&self, i: usize) -> usize {
        usize::from(self.labels[i])
    }

    /// All labels, in sample order.
    pub fn labels(&self) -> impl ExactSizeIterator<Item = usize> + '_ {
        self.labels.iter().map(|&l| usize::from(l))
    }

    /// Samples per class (`classes()` entries).
    pub fn class_counts(&self) -> Vec<usize> {
        let mut h = vec![0; self.classes()];
        for &l in &self.labels {
            h[usize::from(l)] += 1;
        }
        h
    }

    /// The raw `[C, H, W]` bytes of image `i` (channel-planar), `None` for event data or `i`
    /// out of range.
    pub fn image(&self, i: usize) -> Option<&[u8]> {
        let per: usize = self.sample_shape().iter().product();
        match &self.samples {
            Samples::Images { pixels } if i < self.len() => Some(&pixels[i * per..][..per]),
            _ => None,
        }
    }

    /// The events of sample `i` in file order, `None` for image data or `i` out of range.
    pub fn events(&self, i: usize) -> Option<Vec<Event>> {
        match &self.samples {
            Samples::Events(s) if i < self.len() => Some(nmnist::decode(s.sample(i)).collect()),
            _ => None,
        }
    }

    /// Keeps the first `n` samples (no-op if `n >= len()`): what `--limit-train` /
    /// `--limit-test` do. Deterministic, and representative because every dataset's canonical
    /// order is already class-mixed (N-MNIST trees are read in MNIST sample order).
    pub fn truncate(&mut self, n: usize) {
        if n >= self.len() {
            return;
        }
        self.labels.truncate(n);
        match &mut self.samples {
            Samples::Images { pixels } => {
                let per: usize = self.name.sample_shape().iter().product();
                pixels.truncate(n * per);
                pixels.shrink_to_fit();
            }
            Samples::Events(s) => s.truncate(n),
        }
    }
}

/// Adds the "how to obtain" hint to a missing-file error.
fn with_hint(e: Error, name: DatasetName, root: &Path) -> Error {
    match e {
        Error::DataMissing(msg) => {
            Error::DataMissing(format!("{msg}; {}", fetch::hint_tail(name, root)))
        }
        other => other,
    }
}
