//! The subcommands.

use crate::args::{
    AugmentArg, BenchArgs, Command, DataCommand, EvalArgs, LossArg, ModeArg, OptimizerArg,
    RecomputeArg, TrainArgs,
};
use crate::datasets::{self, RunData};
use crate::progress::CliProgress;
use clap::ValueEnum;
use mpsnn::data::{list, Augmentation, Split, SplitStatus};
use mpsnn::dist::SharedCollective;
use mpsnn::models::{self, ModelOptions};
use mpsnn::nn::sequential::Recompute;
use mpsnn::nn::{Encoding, ModelSpec, Network};
use mpsnn::train::bench::{bench, BenchMode};
use mpsnn::train::data_parallel::DataParallel;
use mpsnn::train::run::{DataSource, Progress, Run, Silent};
use mpsnn::train::{evaluate, Checkpoint, Loss, OptimizerConfig, TrainConfig};
use mpsnn::{Error, Result};
use serde_json::json;
use std::path::Path;

/// Runs one subcommand; `group` is set when launched as one of several MPI processes.
pub fn run(command: Command, group: Option<SharedCollective>) -> Result<()> {
    if group.is_some() && !matches!(command, Command::Train(_)) {
        return Err(Error::Unsupported(
            "only `train` runs data-parallel under MPI; start other commands without mpirun".into(),
        ));
    }
    match command {
        Command::Train(a) => train_on(&a, group).map(|_| ()),
        Command::Eval(a) => eval(&a),
        Command::Export(a) => crate::deploy::export(&a),
        Command::Infer(a) => crate::deploy::infer(&a),
        Command::Bench(a) => bench_cmd(&a),
        Command::Data { command } => data(command),
        Command::Demo(a) => crate::deploy::demo(&a),
        Command::Ablate(a) => crate::ablate::ablate(&a),
        Command::Plot(a) => crate::plot::plot(&a),
    }
}

/// Prints `value` as the last stdout line.
pub fn print_json(value: &serde_json::Value) {
    println!("{value}");
}

/// A built-in model by name, or a spec JSON file (checked against the dataset's shape).
pub fn model_spec(model: &str, opts: &ModelOptions) -> Result<ModelSpec> {
    let path = Path::new(model);
    if model.ends_with(".json") || path.is_file() {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let spec: ModelSpec = serde_json::from_str(&text)
            .map_err(|e| Error::bad_file(path, format!("bad model spec: {e}")))?;
        if spec.input != opts.input
            || spec.classes != opts.classes
            || spec.encoding != opts.encoding
        {
            return Err(Error::bad_file(
                path,
                format!(
                    "spec is for input {:?}, {} classes, {:?} encoding; the dataset gives {:?}, {}, {:?}",
                    spec.input, spec.classes, spec.encoding, opts.input, opts.classes, opts.encoding
                ),
            ));
        }
        return Ok(spec);
    }
    models::build(model, opts)
}

/// The augmentation a run trains with: the one it was started with (runs from before the flag
/// existed used the dataset's default); asking a resumed run for another one is an error.
fn resumed_augmentation(run: &Run, asked: AugmentArg) -> Result<Option<Augmentation>> {
    let Some(started) = run.label("augment") else {
        return Ok(None);
    };
    let started = AugmentArg::from_str(started, false)
        .map_err(|_| Error::InvalidArgument(format!("unknown augmentation label {started:?}")))?;
    if asked != AugmentArg::Auto && asked != started {
        return Err(Error::InvalidArgument(format!(
            "this run was started with --augment {}, not {}",
            started.name(),
            asked.name()
        )));
    }
    Ok(started.augmentation())
}

/// `mpsnn train` in one process; returns the run folder's summary.
pub fn train(a: &TrainArgs) -> Result<mpsnn::train::run::Summary> {
    train_on(a, None)
}

/// `mpsnn train`, data-parallel over `group` when given (rank 0 alone prints and writes files).
pub fn train_on(
    a: &TrainArgs,
    group: Option<SharedCollective>,
) -> Result<mpsnn::train::run::Summary> {
    let root_rank = group.as_ref().is_none_or(|g| g.is_root());
    let name = datasets::dataset_name(&a.dataset)?;
    let root = datasets::data_root(a.data_dir.as_deref());
    let train = datasets::load(name, Split::Train, &root, a.limit_train)?;
    let test = datasets::load(name, Split::Test, &root, a.limit_test)?;
    let mut run = if a.resume {
        Run::resume(&a.out, Some(a.epochs))?
    } else {
        if Run::last_checkpoint(&a.out).exists() {
            return Err(Error::InvalidArgument(format!(
                "{} already holds a run; pass --resume to continue it or choose another --out",
                a.out.display()
            )));
        }
        let opts = ModelOptions {
            input: train.sample_shape(),
            classes: train.classes(),
            encoding: if train.is_event() {
                Encoding::Frames
            } else {
                Encoding::Direct
            },
            lif: a.neuron.lif(),
            dropout: a
                .dropout
                .unwrap_or_else(|| models::default_dropout(&a.model)),
        };
        let spec = model_spec(&a.model, &opts)?;
        let config = TrainConfig {
            timesteps: a.timesteps,
            epochs: a.epochs,
            batch_size: a.batch_size,
            lr: a.lr,
            optimizer: match a.optimizer {
                OptimizerArg::Sgd => OptimizerConfig::Sgd {
                    momentum: 0.9,
                    weight_decay: a.weight_decay,
                },
                OptimizerArg::Adamw => OptimizerConfig::AdamW {
                    beta1: 0.9,
                    beta2: 0.999,
                    eps: 1e-8,
                    weight_decay: a.weight_decay,
                },
            },
            loss: match a.loss {
                LossArg::MeanCe => Loss::MeanCe,
                LossArg::Tet => Loss::Tet {
                    lambda: a.tet_lambda,
                },
            },
            seed: a.seed,
        };
        let net = Network::new(spec, a.seed)?;
        let mut run = Run::new(&a.out, net, config)?;
        run.set_label("dataset", name.as_str());
        run.set_label("augment", &a.augment.name());
        run
    };
    if let Some(trained_on) = run.label("dataset") {
        if trained_on != name.as_str() {
            return Err(Error::InvalidArgument(format!(
                "{} was trained on {trained_on}, not {}",
                a.out.display(),
                name.as_str()
            )));
        }
    }
    let augment = resumed_augmentation(&run, a.augment)?;
    let ranks = group.as_ref().map_or(1, |g| g.size());
    crate::dist::record_run_labels(&mut run, ranks, a.sync_bn, root_rank);
    if let Some(g) = &group {
        let mut dp = DataParallel::new(g.clone(), a.sync_bn);
        dp.attach(&mut run.trainer().net);
        run.trainer().data_parallel = Some(dp);
    }
    let config = run.trainer().config.clone();
    if root_rank {
        eprintln!(
            "training {} on {} ({} train / {} test samples), T = {}, {} epochs, batch {}, {} threads -> {}",
            run.trainer().net.spec().name,
            name.as_str(),
            train.len(),
            test.len(),
            config.timesteps,
            config.epochs,
            crate::dist::describe_batch(config.batch_size, ranks, a.sync_bn),
            rayon::current_num_threads(),
            a.out.display()
        );
    }
    let data: Box<dyn DataSource> = match &group {
        Some(g) => Box::new(crate::dist::ShardedData {
            train,
            test,
            batch_size: config.batch_size,
            timesteps: config.timesteps,
            seed: config.seed,
            augment,
            rank: g.rank(),
            ranks,
        }),
        None => Box::new(RunData {
            train,
            test,
            batch_size: config.batch_size,
            timesteps: config.timesteps,
            seed: config.seed,
            augment,
        }),
    };
    let mut progress: Box<dyn Progress> = if root_rank {
        Box::new(CliProgress::new())
    } else {
        Box::new(Silent)
    };
    let summary = run.run(data.as_ref(), progress.as_mut(), a.stop_after)?;
    if let Some(dir) = &a.replica_dump {
        let rank = group.as_ref().map_or(0, |g| g.rank());
        crate::dist::dump_replica(&mut run, dir, rank)?;
    }
    if !root_rank {
        return Ok(summary);
    }
    let mut result = json!({
        "best_test_accuracy": summary.best_test_accuracy,
        "accuracy": summary.final_test.accuracy,
        "accuracy_per_timestep": summary.final_test.accuracy_per_timestep,
        "n": summary.final_test.n,
        "epochs": summary.epochs,
        "train_seconds": summary.train_seconds,
        "checkpoint": Run::last_checkpoint(&a.out),
    });
    if let Some(dp) = &run.trainer().data_parallel {
        result["data_parallel"] = json!({
            "ranks": ranks,
            "sync_bn": dp.sync_bn(),
            "steps": dp.steps(),
            "comm_seconds": dp.comm_seconds(),
            "comm_seconds_per_step": dp.comm_seconds() / dp.steps().max(1) as f64,
            "gradient_allreduce_seconds_per_step":
                dp.gradient_allreduce_seconds() / dp.steps().max(1) as f64,
        });
    }
    print_json(&result);
    Ok(summary)
}

/// Loads a checkpoint's network and its training timesteps.
pub fn load_network(path: &Path) -> Result<(Network, Checkpoint, usize)> {
    let ckpt = Checkpoint::load(path)?;
    let mut net = Network::new(ckpt.spec.clone(), 0)?;
    net.load_state_dict(&ckpt.model)
        .map_err(|e| Error::bad_file(path, e.to_string()))?;
    let timesteps = ckpt.meta["config"]["timesteps"]
        .as_u64()
        .map(|t| t as usize)
        .unwrap_or(4);
    Ok((net, ckpt, timesteps))
}

/// `mpsnn eval`
fn eval(a: &EvalArgs) -> Result<()> {
    let (mut net, _, trained_t) = load_network(&a.checkpoint)?;
    let t = a.timesteps.unwrap_or(trained_t);
    let name = datasets::dataset_name(&a.dataset)?;
    let root = datasets::data_root(a.data_dir.as_deref());
    let test = datasets::load(name, Split::Test, &root, a.limit_test)?;
    let stats = evaluate(&mut net, t, Loss::MeanCe, datasets::test_batches(&test, t)?)?;
    print_json(&json!({
        "accuracy": stats.accuracy,
        "accuracy_per_timestep": stats.accuracy_per_timestep,
        "n": stats.n,
    }));
    Ok(())
}

/// `mpsnn bench`
fn bench_cmd(a: &BenchArgs) -> Result<()> {
    let input = match &a.input {
        Some(v) if v.len() == 3 => [v[0], v[1], v[2]],
        Some(v) => {
            return Err(Error::InvalidArgument(format!(
                "--input takes C,H,W, got {v:?}"
            )))
        }
        None => match a.model.as_str() {
            "mnist-cnn" => [1, 28, 28],
            "cnn7-dvs" => [2, 48, 48],
            "resnet34" => [3, 224, 224],
            _ => [3, 32, 32],
        },
    };
    let mut opts = ModelOptions::new(input, a.classes);
    if a.model == "cnn7-dvs" {
        opts.encoding = Encoding::Frames;
    }
    let spec = model_spec(&a.model, &opts)?;
    let mode = match a.mode {
        ModeArg::Train => BenchMode::Train,
        ModeArg::Infer => BenchMode::Infer,
    };
    let recompute = match a.recompute {
        RecomputeArg::Off => Recompute::Off,
        RecomputeArg::Lif => Recompute::Lif,
        RecomputeArg::Pointwise => Recompute::Pointwise,
        RecomputeArg::Full => Recompute::Full,
    };
    let result = bench(
        &spec,
        a.timesteps,
        a.batch_size,
        mode,
        a.warmup,
        a.iters,
        recompute,
    )?;
    eprintln!(
        "{} {:?} T={} B={} threads={}: {:.1} images/s, {:.1} GFLOP/s, peak RSS {:.0} MB",
        result.model,
        result.mode,
        result.timesteps,
        result.batch_size,
        result.threads,
        result.images_per_s,
        result.effective_gflops,
        result.peak_rss_mb.unwrap_or(f64::NAN)
    );
    print_json(&serde_json::to_value(&result).map_err(|e| Error::InvalidArgument(e.to_string()))?);
    Ok(())
}

/// `mpsnn data fetch|list`
fn data(command: DataCommand) -> Result<()> {
    match command {
        DataCommand::Fetch { name, data_dir } => {
            let name = datasets::dataset_name(&name)?;
            let root = datasets::data_root(data_dir.as_deref());
            let report = mpsnn::data::fetch(name, &root, Default::default())?;
            eprintln!("{}", datasets::describe_fetch(&report));
            Ok(())
        }
        DataCommand::List { data_dir } => {
            let root = datasets::data_root(data_dir.as_deref());
            println!("data root: {}", root.display());
            for status in list(&root) {
                let split = |s: &SplitStatus| match s {
                    SplitStatus::Present => "present".to_string(),
                    SplitStatus::Missing(why) => format!("missing ({why})"),
                };
                println!(
                    "{:<14} train: {}  test: {}",
                    status.name.as_str(),
                    split(&status.train),
                    split(&status.test)
                );
            }
            Ok(())
        }
    }
}
