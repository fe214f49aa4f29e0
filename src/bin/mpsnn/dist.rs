//! `mpirun -np N mpsnn train …`: detecting an MPI launch, starting MPI (cargo feature `mpi`),
//! and the pieces of a data-parallel run that live in the CLI (sharded data, replica dumps).
//!
//! Without the `mpi` feature, a process started by an MPI launcher as one of N > 1 refuses to
//! run (N independent copies would each train alone and overwrite each other's files). With the
//! feature, MPI is initialized only under a launcher, so a plain `mpsnn train` never touches
//! MPI. `mpirun -np 1` is an ordinary single-process run.

use crate::datasets::EVAL_BATCH;
use mpsnn::data::{epoch_permutation, Augmentation, Dataset, Loader, LoaderConfig};
use mpsnn::dist::shard::{eval_shard, steps_per_epoch, train_shard};
use mpsnn::dist::SharedCollective;
use mpsnn::train::run::{Batches, DataSource, Run};
use mpsnn::train::Checkpoint;
use mpsnn::{Error, Result};
use std::path::Path;
use std::sync::Arc;

/// Variables an MPI launcher sets to the number of processes: Open MPI, then MPICH/Hydra.
const SIZE_VARS: [&str; 2] = ["OMPI_COMM_WORLD_SIZE", "PMI_SIZE"];
/// ... and to the number of processes on this node.
const LOCAL_SIZE_VARS: [&str; 2] = ["OMPI_COMM_WORLD_LOCAL_SIZE", "MPI_LOCALNRANKS"];

fn env_count(vars: &[&str]) -> Option<usize> {
    vars.iter()
        .find_map(|v| std::env::var(v).ok()?.trim().parse().ok())
}

/// Processes on this node when started by an MPI launcher (to split the cores among them).
pub fn local_ranks() -> Option<usize> {
    env_count(&LOCAL_SIZE_VARS)
}

/// MPI for this process, if it was launched as one of several.
pub struct Launch {
    #[cfg(feature = "mpi")]
    runtime: Option<mpsnn::dist::mpi::MpiRuntime>,
}

impl Launch {
    /// Detects the launcher and, with the `mpi` feature, initializes MPI.
    pub fn start() -> Result<Launch> {
        let launched = env_count(&SIZE_VARS).filter(|&n| n > 1);
        #[cfg(feature = "mpi")]
        {
            let runtime = match launched {
                None => None,
                Some(n) => {
                    let rt = mpsnn::dist::mpi::MpiRuntime::init()
                        .ok_or_else(|| Error::Unsupported("MPI could not be initialized".into()))?;
                    let size = mpsnn::dist::Collective::size(rt.world().as_ref());
                    if size != n {
                        return Err(Error::Unsupported(format!(
                            "the launcher announced {n} processes but MPI_COMM_WORLD has {size}"
                        )));
                    }
                    Some(rt)
                }
            };
            Ok(Launch { runtime })
        }
        #[cfg(not(feature = "mpi"))]
        match launched {
            None => Ok(Launch {}),
            Some(n) => Err(Error::Unsupported(format!(
                "started as one of {n} MPI processes, but this mpsnn was built without MPI \
                 support; rebuild with `cargo build --release --features mpi` \
                 (needs Open MPI and libclang), or run a single process"
            ))),
        }
    }

    /// The world group, when launched as one of several processes.
    pub fn group(&self) -> Option<SharedCollective> {
        #[cfg(feature = "mpi")]
        if let Some(rt) = &self.runtime {
            return Some(rt.world());
        }
        None
    }

    /// After an error on this rank: stop every rank of the job (they would otherwise wait for
    /// this one forever). Returns normally in a single process.
    pub fn abort_group(&self, code: i32) {
        #[cfg(feature = "mpi")]
        if let Some(rt) = &self.runtime {
            rt.abort(code);
        }
        let _ = code;
    }
}

/// One rank's view of the training and test data: its shard of every epoch's global order and
/// its block of the test set ([`mpsnn::dist::shard`]).
pub struct ShardedData {
    /// Training split.
    pub train: Arc<Dataset>,
    /// Test split.
    pub test: Arc<Dataset>,
    /// Samples per rank per step.
    pub batch_size: usize,
    /// Timesteps (frames per event sample).
    pub timesteps: usize,
    /// Run seed (shuffle and augmentation).
    pub seed: u64,
    /// Training-set augmentation (`None` = the dataset's default).
    pub augment: Option<Augmentation>,
    /// This rank and the number of ranks.
    pub rank: usize,
    /// Number of ranks.
    pub ranks: usize,
}

impl DataSource for ShardedData {
    fn train(&self, epoch: usize) -> Result<Batches<'_>> {
        let config = LoaderConfig {
            augment: self.augment,
            ..LoaderConfig::train(self.batch_size, self.timesteps, self.seed, epoch as u64)
        };
        let order = epoch_permutation(self.train.len(), self.seed, epoch as u64);
        let shard = train_shard(&order, self.batch_size, self.ranks, self.rank);
        let loader = Loader::with_order(Arc::clone(&self.train), shard, &config)?;
        Ok(Box::new(loader.map(|b| Ok((b.input, b.labels)))))
    }

    fn test(&self) -> Result<Batches<'_>> {
        let block: Vec<usize> = eval_shard(self.test.len(), self.ranks, self.rank).collect();
        let config = LoaderConfig::new(EVAL_BATCH, self.timesteps);
        let loader = Loader::with_order(Arc::clone(&self.test), block, &config)?;
        Ok(Box::new(loader.map(|b| Ok((b.input, b.labels)))))
    }

    fn train_batches(&self) -> usize {
        steps_per_epoch(self.train.len(), self.batch_size, self.ranks)
    }
}

/// Writes this rank's parameters and buffers to `dir/rank<r>.ckpt` (`--replica-dump`), so the
/// replicas can be compared byte for byte.
pub fn dump_replica(run: &mut Run, dir: &Path, rank: usize) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let net = &mut run.trainer().net;
    let ckpt = Checkpoint {
        spec: net.spec().clone(),
        model: net.state_dict(),
        optimizer: Default::default(),
        meta: serde_json::json!({}),
    };
    ckpt.save(&dir.join(format!("rank{rank}.ckpt")))
}

/// Records the process count and BN mode in the run's labels; when a resumed run changes them
/// (allowed: every rank holds the whole state) and `announce` is set, says so, since the global
/// batch or the BN statistics change with them.
pub fn record_run_labels(run: &mut Run, ranks: usize, sync_bn: bool, announce: bool) {
    let (ranks_now, sync_now) = (ranks.to_string(), sync_bn.to_string());
    if let (Some(r), Some(s)) = (run.label("ranks"), run.label("sync_bn")) {
        if (r, s) != (ranks_now.as_str(), sync_now.as_str()) && announce {
            eprintln!(
                "note: this run was trained on {r} rank(s) with sync_bn={s}; continuing on \
                 {ranks_now} with sync_bn={sync_now}"
            );
        }
    }
    run.set_label("ranks", &ranks_now);
    run.set_label("sync_bn", &sync_now);
}

/// "64" for one process; "32 per rank × 2 ranks = 64 (synchronized BN statistics)" for several.
pub fn describe_batch(batch: usize, ranks: usize, sync_bn: bool) -> String {
    if ranks == 1 {
        return batch.to_string();
    }
    let bn = if sync_bn { "synchronized" } else { "per-rank" };
    format!(
        "{batch} per rank × {ranks} ranks = {} ({bn} BN statistics)",
        batch * ranks
    )
}
