//! Batches and the prefetching [`Loader`].
//!
//! A loader walks one epoch in a fixed order (identity, the seeded [`epoch_permutation`], or an
//! order the caller gives, e.g. one rank's shard) and assembles each batch on a background
//! thread that stays up to `prefetch` batches ahead, over a bounded channel. Batch contents are a
//! pure function of `(dataset, order, config)` — never of thread timing — because the single
//! producer thread builds batches strictly in order and every random draw is keyed by
//! `(seed, epoch, sample index)`.

use super::encode::{epoch_permutation, write_image, Augmentation, Normalizer};
use super::registry::Split;
use super::{Dataset, Samples};
use crate::error::{Error, Result};
use crate::tensor::Tensor;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, TryRecvError};
use std::sync::Arc;
use std::thread::JoinHandle;

/// One batch of inputs and labels.
#[derive(Clone, Debug, PartialEq)]
pub struct Batch {
    /// Static images: `[B, C, H, W]` normalized (the network repeats them `T` times — direct
    /// encoding). Event data: `[T·B, C, H, W]` frames, time-major (row `t·B + b`).
    pub input: Tensor,
    /// Class of each sample, `B` entries.
    pub labels: Vec<usize>,
    /// Dataset index of each sample, `B` entries.
    pub indices: Vec<usize>,
}

/// How a [`Loader`] walks one epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LoaderConfig {
    /// Samples per batch (≥ 1). The last batch is smaller unless `drop_last`.
    pub batch_size: usize,
    /// Frames per sample for event data (≥ 1); ignored for static images.
    pub timesteps: usize,
    /// Visit samples in [`epoch_permutation`]`(n, seed, epoch)` order instead of `0..n`.
    pub shuffle: bool,
    /// The training split's augmentation; `None` = the dataset's default
    /// ([`DatasetName::default_augmentation`](super::DatasetName::default_augmentation)). Test
    /// splits and event data are never augmented.
    pub augment: Option<Augmentation>,
    /// Run seed: with `epoch`, keys the permutation and the augmentation.
    pub seed: u64,
    /// Epoch number (any convention, e.g. 0- or 1-based, as long as it is used consistently).
    pub epoch: u64,
    /// Skip the last batch when it has fewer than `batch_size` samples.
    pub drop_last: bool,
    /// Batches assembled ahead of the consumer (≥ 1).
    pub prefetch: usize,
}

impl LoaderConfig {
    /// In-order, unaugmented batches of `batch_size` with `timesteps` frames for event data,
    /// seed and epoch 0, keeping the last partial batch, prefetching 3 batches.
    pub fn new(batch_size: usize, timesteps: usize) -> Self {
        LoaderConfig {
            batch_size,
            timesteps,
            shuffle: false,
            augment: Some(Augmentation::Off),
            seed: 0,
            epoch: 0,
            drop_last: false,
            prefetch: 3,
        }
    }

    /// The training setting: shuffled and augmented (the dataset's default) with `seed` in
    /// `epoch`; like PyTorch's
    /// `DataLoader` default, the last partial batch is kept (set `drop_last` to skip it).
    pub fn train(batch_size: usize, timesteps: usize, seed: u64, epoch: u64) -> Self {
        LoaderConfig {
            shuffle: true,
            augment: None,
            seed,
            epoch,
            ..LoaderConfig::new(batch_size, timesteps)
        }
    }
}

/// An iterator over one epoch's [`Batch`]es, assembled on a background thread.
///
/// Dropping it mid-epoch stops and joins the thread. If batch assembly panics (a bug), the
/// panic resurfaces in the consumer's `next`.
///
/// ```no_run
/// use mpsnn::data::{Dataset, DatasetName, Loader, LoaderConfig, Split};
/// use std::sync::Arc;
/// let root = mpsnn::data::resolve_data_root(None);
/// let train = Arc::new(Dataset::load(DatasetName::Cifar10, Split::Train, &root)?);
/// for batch in Loader::new(train, &LoaderConfig::train(64, 4, 1234, 0))? {
///     assert_eq!(batch.input.shape(), &[64, 3, 32, 32]);
/// }
/// # Ok::<(), mpsnn::Error>(())
/// ```
#[derive(Debug)]
pub struct Loader {
    rx: Option<Receiver<Batch>>,
    worker: Option<JoinHandle<()>>,
    remaining: usize,
    assembled: Arc<AtomicUsize>,
    stalls: usize,
}

impl Loader {
    /// A loader over the whole dataset, in order or shuffled per `config`.
    pub fn new(dataset: Arc<Dataset>, config: &LoaderConfig) -> Result<Loader> {
        let order = if config.shuffle {
            epoch_permutation(dataset.len(), config.seed, config.epoch)
        } else {
            (0..dataset.len()).collect()
        };
        Loader::with_order(dataset, order, config)
    }

    /// A loader visiting exactly `order` (dataset indices, repeats allowed), e.g. one rank's
    /// shard of [`epoch_permutation`]; `config.shuffle` is ignored.
    pub fn with_order(
        dataset: Arc<Dataset>,
        order: Vec<usize>,
        config: &LoaderConfig,
    ) -> Result<Loader> {
        let LoaderConfig {
            batch_size,
            timesteps,
            prefetch,
            ..
        } = *config;
        if batch_size == 0 || prefetch == 0 || (dataset.is_event() && timesteps == 0) {
            return Err(Error::InvalidArgument(format!(
                "loader needs batch_size, prefetch and (event data) timesteps >= 1, \
                 got {batch_size}, {prefetch}, {timesteps}"
            )));
        }
        if let Some(&bad) = order.iter().find(|&&i| i >= dataset.len()) {
            return Err(Error::InvalidArgument(format!(
                "sample index {bad} out of range for a dataset of {}",
                dataset.len()
            )));
        }
        let mut chunks: Vec<Vec<usize>> = order.chunks(batch_size).map(<[usize]>::to_vec).collect();
        if config.drop_last && chunks.last().is_some_and(|c| c.len() < batch_size) {
            chunks.pop();
        }
        let remaining = chunks.len();
        let augment = match dataset.split() {
            Split::Train => config
                .augment
                .unwrap_or_else(|| dataset.name().default_augmentation()),
            Split::Test => Augmentation::Off,
        };
        let (seed, epoch) = (config.seed, config.epoch);
        let (tx, rx) = sync_channel(prefetch);
        let assembled = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&assembled);
        let worker = std::thread::Builder::new()
            .name("mpsnn-loader".into())
            .spawn(move || {
                let norm = dataset
                    .name()
                    .normalization()
                    .map(|(m, s)| Normalizer::new(m, s));
                for indices in chunks {
                    let batch = assemble(
                        &dataset,
                        indices,
                        timesteps,
                        norm.as_ref(),
                        augment,
                        (seed, epoch),
                    );
                    counter.fetch_add(1, Ordering::Relaxed);
                    if tx.send(batch).is_err() {
                        return; // The consumer dropped the loader.
                    }
                }
            })
            .map_err(|e| Error::io("mpsnn-loader thread", e))?;
        Ok(Loader {
            rx: Some(rx),
            worker: Some(worker),
            remaining,
            assembled,
            stalls: 0,
        })
    }

    /// Batches still to come in this epoch.
    pub fn remaining(&self) -> usize {
        self.remaining
    }

    /// Batches the background thread has finished so far (consumed or waiting). It runs at
    /// most `prefetch + 1` ahead of the consumer: `prefetch` in the channel and one blocked on
    /// sending.
    pub fn assembled(&self) -> usize {
        self.assembled.load(Ordering::Relaxed)
    }

    /// How many `next` calls found no batch ready and had to wait: non-zero means data
    /// loading, not compute, bounded those steps.
    pub fn stalls(&self) -> usize {
        self.stalls
    }
}

/// Builds the batch of `indices`.
fn assemble(
    dataset: &Dataset,
    indices: Vec<usize>,
    timesteps: usize,
    norm: Option<&Normalizer>,
    augment: Augmentation,
    (seed, epoch): (u64, u64),
) -> Batch {
    let b = indices.len();
    let [c, h, w] = dataset.sample_shape();
    let per = c * h * w;
    let input = match &dataset.samples {
        Samples::Images { pixels } => {
            let norm = norm.expect("static datasets have normalization constants");
            let mut data = vec![0.0f32; b * per];
            for (out, &i) in data.chunks_exact_mut(per).zip(&indices) {
                let aug = augment.params(seed, epoch, i);
                write_image(&pixels[i * per..][..per], [c, h, w], norm, aug, out);
            }
            Tensor::from_vec(&[b, c, h, w], data)
        }
        Samples::Events(store) => {
            let mut data = vec![0.0f32; timesteps * b * per];
            for (slot, &i) in indices.iter().enumerate() {
                super::nmnist::bin_into(store.sample(i), timesteps, b, slot, &mut data);
            }
            Tensor::from_vec(&[timesteps * b, c, h, w], data)
        }
    }
    .expect("batch buffer sized from its shape");
    Batch {
        labels: indices.iter().map(|&i| dataset.label(i)).collect(),
        input,
        indices,
    }
}

impl Iterator for Loader {
    type Item = Batch;

    fn next(&mut self) -> Option<Batch> {
        if self.remaining == 0 {
            return None;
        }
        let rx = self.rx.as_ref()?;
        let received = match rx.try_recv() {
            Ok(batch) => Ok(batch),
            Err(TryRecvError::Empty) => {
                self.stalls += 1;
                rx.recv().map_err(|_| ())
            }
            Err(TryRecvError::Disconnected) => Err(()),
        };
        match received {
            Ok(batch) => {
                self.remaining -= 1;
                Some(batch)
            }
            Err(_) => {
                // The worker ended early: only a panic does that.
                self.remaining = 0;
                if let Some(Err(panic)) = self.worker.take().map(JoinHandle::join) {
                    std::panic::resume_unwind(panic);
                }
                None
            }
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.remaining, Some(self.remaining))
    }
}

impl ExactSizeIterator for Loader {}

impl Drop for Loader {
    fn drop(&mut self) {
        // Closing the receiver makes the worker's next `send` fail, so `join` cannot block on a
        // full channel.
        drop(self.rx.take());
        if let Some(w) = self.worker.take() {
            let _ = w.join();
        }
    }
}
