//! Loaders and the batch loader against the real files in `$MPSNN_DATA` (default
//! `../shared/data`): counts, label histograms, first labels and pixel statistics as listed in
//! that folder's README, and N-MNIST events checked against the raw files.

#[path = "data/support.rs"]
mod support;

use mpsnn::data::{
    augment_params, Augmentation, Dataset, DatasetName, Loader, LoaderConfig, Split, CROP_PAD,
    SHIFT_PAD,
};
use std::sync::{Arc, OnceLock};
use support::real_root;

fn load(name: DatasetName, split: Split) -> Arc<Dataset> {
    Arc::new(Dataset::load(name, split, &real_root()).unwrap_or_else(|e| panic!("{e}")))
}

fn mnist_train() -> Arc<Dataset> {
    static D: OnceLock<Arc<Dataset>> = OnceLock::new();
    D.get_or_init(|| load(DatasetName::Mnist, Split::Train))
        .clone()
}

fn cifar_train() -> Arc<Dataset> {
    static D: OnceLock<Arc<Dataset>> = OnceLock::new();
    D.get_or_init(|| load(DatasetName::Cifar10, Split::Train))
        .clone()
}

fn nmnist_train() -> Arc<Dataset> {
    static D: OnceLock<Arc<Dataset>> = OnceLock::new();
    D.get_or_init(|| load(DatasetName::Nmnist, Split::Train))
        .clone()
}

/// Per-channel mean and std of pixel/255 over a whole image dataset (f64 accumulation).
fn channel_stats(d: &Dataset) -> Vec<(f64, f64)> {
    let [c, h, w] = d.sample_shape();
    let plane = h * w;
    let mut sums = vec![(0u64, 0u64); c];
    for i in 0..d.len() {
        for (ch, px) in d.image(i).unwrap().chunks_exact(plane).enumerate() {
            for &v in px {
                sums[ch].0 += u64::from(v);
                sums[ch].1 += u64::from(v) * u64::from(v);
            }
        }
    }
    let n = (d.len() * plane) as f64;
    sums.iter()
        .map(|&(s, s2)| {
            let mean = s as f64 / n / 255.0;
            let var = s2 as f64 / n / (255.0 * 255.0) - mean * mean;
            (mean, var.sqrt())
        })
        .collect()
}

#[test]
fn mnist_counts_labels_and_pixel_statistics() {
    let train = mnist_train();
    let test = load(DatasetName::Mnist, Split::Test);
    assert_eq!((train.len(), test.len()), (60_000, 10_000));
    assert_eq!(
        (train.classes(), train.sample_shape(), train.is_event()),
        (10, [1, 28, 28], false)
    );
    assert_eq!(
        test.class_counts(),
        vec![980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    );
    let first: Vec<usize> = train.labels().take(10).collect();
    assert_eq!(first, vec![5, 0, 4, 1, 9, 2, 1, 3, 1, 4]);
    let stats = channel_stats(&train);
    assert!((stats[0].0 - 0.1307).abs() < 1e-4, "{stats:?}");
    assert!((stats[0].1 - 0.3081).abs() < 1e-4, "{stats:?}");
}

#[test]
fn cifar10_counts_labels_and_channel_statistics() {
    let train = cifar_train();
    let test = load(DatasetName::Cifar10, Split::Test);
    assert_eq!((train.len(), test.len()), (50_000, 10_000));
    assert_eq!(train.sample_shape(), [3, 32, 32]);
    assert_eq!(train.class_counts(), vec![5000; 10]);
    assert_eq!(test.class_counts(), vec![1000; 10]);
    let first: Vec<usize> = test.labels().take(10).collect();
    assert_eq!(first, vec![3, 8, 8, 0, 6, 6, 1, 6, 3, 1]);
    let stats = channel_stats(&train);
    let want = [(0.4914, 0.2470), (0.4822, 0.2435), (0.4465, 0.2616)];
    for (got, want) in stats.iter().zip(want) {
        assert!(
            (got.0 - want.0).abs() < 1e-4 && (got.1 - want.1).abs() < 1e-4,
            "{stats:?}"
        );
    }
}

#[test]
fn nmnist_subset_labels_follow_the_lists() {
    let train = nmnist_train();
    let test = load(DatasetName::Nmnist, Split::Test);
    assert_eq!((train.len(), test.len()), (1000, 100));
    assert!(train.is_event() && train.sample_shape() == [2, 34, 34]);
    assert_eq!(
        train.class_counts(),
        vec![97, 116, 99, 93, 105, 92, 94, 117, 87, 100]
    );
    assert_eq!(
        test.class_counts(),
        vec![8, 14, 8, 11, 14, 7, 10, 15, 2, 11]
    );
    // N-MNIST sample k is MNIST sample k: the subset's labels are MNIST's first labels.
    let mnist = mnist_train();
    assert!((0..1000).all(|i| train.label(i) == mnist.label(i)));
    let first_test: Vec<usize> = test.labels().take(5).collect();
    assert_eq!(first_test, vec![7, 2, 1, 0, 4]);
}

#[test]
fn nmnist_events_match_the_raw_file() {
    let train = nmnist_train();
    let raw = std::fs::read(real_root().join("nmnist-small/1.bs2")).unwrap();
    let ev = train.events(0).unwrap();
    assert_eq!(ev.len(), raw.len() / 5);
    assert_eq!(ev.len(), 4681);
    // First record 18 16 128 3 125: x 18, y 16, ON, t = 3·256 + 125.
    assert_eq!((ev[0].x, ev[0].y, ev[0].p, ev[0].t_us), (18, 16, 1, 893));
    assert_eq!(ev.iter().filter(|e| e.p == 1).count(), 2328);
    for d in [train.clone(), load(DatasetName::Nmnist, Split::Test)] {
        for i in 0..d.len() {
            let ev = d.events(i).unwrap();
            assert!(ev.iter().all(|e| e.x < 34 && e.y < 34 && e.p < 2));
            assert!(
                ev.windows(2).all(|w| w[0].t_us <= w[1].t_us),
                "sample {i} not time-sorted"
            );
            // A saccade sequence lasts about 0.3 s.
            assert!(ev.last().unwrap().t_us < 400_000);
        }
    }
}

#[test]
fn nmnist_frames_count_every_event_once() {
    let train = nmnist_train();
    let t = 10;
    let mut loader = Loader::new(train.clone(), &LoaderConfig::new(4, t)).unwrap();
    let batch = loader.next().unwrap();
    assert_eq!(batch.input.shape(), &[t * 4, 2, 34, 34]);
    let frame = 2 * 34 * 34;
    for b in 0..4 {
        let ev = train.events(b).unwrap();
        let per_t: Vec<f32> = (0..t)
            .map(|step| {
                batch.input.data()[(step * 4 + b) * frame..][..frame]
                    .iter()
                    .sum()
            })
            .collect();
        assert_eq!(per_t.iter().sum::<f32>(), ev.len() as f32, "sample {b}");
        // Equal time windows: frame t holds the events with (t_e - t0) / dt == t.
        let (t0, t1) = (ev[0].t_us, ev.last().unwrap().t_us);
        let dt = (t1 - t0) / t as u64;
        let in_first = ev.iter().filter(|e| e.t_us - t0 < dt).count();
        assert_eq!(per_t[0], in_first as f32);
        // Pixel-level: one event's (p, y, x) cell in its frame is non-zero.
        let e = ev[ev.len() / 2];
        let step = (((e.t_us - t0) / dt) as usize).min(t - 1);
        let cell = (step * 4 + b) * frame
            + (usize::from(e.p) * 34 + usize::from(e.y)) * 34
            + usize::from(e.x);
        assert!(batch.input.data()[cell] >= 1.0);
    }
    assert_eq!(batch.labels, vec![5, 0, 4, 1]);
}

#[test]
fn static_batches_are_normalized_direct_inputs() {
    let train = mnist_train();
    let batch = Loader::new(train.clone(), &LoaderConfig::new(32, 4))
        .unwrap()
        .next()
        .unwrap();
    assert_eq!(batch.input.shape(), &[32, 1, 28, 28]);
    assert_eq!(batch.indices, (0..32).collect::<Vec<_>>());
    let img = train.image(3).unwrap();
    for (o, &v) in batch.input.data()[3 * 784..][..784].iter().zip(img) {
        assert_eq!(*o, (v as f32 / 255.0 - 0.1307) / 0.3081);
    }
}

#[test]
fn cifar_augmentation_is_crop_then_flip_keyed_by_sample() {
    let train = cifar_train();
    let cfg = LoaderConfig::train(16, 4, 99, 3);
    let batch = Loader::new(train.clone(), &cfg).unwrap().next().unwrap();
    assert_eq!(batch.input.shape(), &[16, 3, 32, 32]);
    let (mean, std) = DatasetName::Cifar10.normalization().unwrap();
    for (slot, &i) in batch.indices.iter().enumerate() {
        let a = augment_params(99, 3, i);
        let img = train.image(i).unwrap();
        let out = &batch.input.data()[slot * 3072..][..3072];
        for c in 0..3 {
            for y in 0..32 {
                for x in 0..32 {
                    let cx = if a.flip { 31 - x } else { x };
                    let (sy, sx) = (
                        (y + a.top) as isize - CROP_PAD as isize,
                        (cx + a.left) as isize - CROP_PAD as isize,
                    );
                    let v = if (0..32).contains(&sy) && (0..32).contains(&sx) {
                        img[c * 1024 + sy as usize * 32 + sx as usize]
                    } else {
                        0
                    };
                    let want = (v as f32 / 255.0 - mean[c]) / std[c];
                    assert_eq!(
                        out[c * 1024 + y * 32 + x],
                        want,
                        "sample {i} c{c} y{y} x{x}"
                    );
                }
            }
        }
    }
    // The test split is never augmented, whatever the flag says.
    let test = load(DatasetName::Cifar10, Split::Test);
    let tb = Loader::new(
        test.clone(),
        &LoaderConfig {
            shuffle: false,
            ..cfg
        },
    )
    .unwrap()
    .next()
    .unwrap();
    let plain = Loader::new(test, &LoaderConfig::new(16, 4))
        .unwrap()
        .next()
        .unwrap();
    assert_eq!(tb, plain);
}

#[test]
fn digits_are_not_augmented_by_default() {
    let train = mnist_train();
    let aug = LoaderConfig {
        shuffle: false,
        ..LoaderConfig::train(8, 4, 5, 1)
    };
    let a = Loader::new(train.clone(), &aug).unwrap().next().unwrap();
    let b = Loader::new(train, &LoaderConfig::new(8, 4))
        .unwrap()
        .next()
        .unwrap();
    assert_eq!(a, b);
}

#[test]
fn digit_shift_is_an_opt_in_translation_keyed_by_sample() {
    let train = mnist_train();
    let cfg = LoaderConfig {
        augment: Some(Augmentation::Shift),
        ..LoaderConfig::train(16, 4, 11, 2)
    };
    let batch = Loader::new(train.clone(), &cfg).unwrap().next().unwrap();
    let (mean, std) = DatasetName::Mnist.normalization().unwrap();
    let mut moved = 0;
    for (slot, &i) in batch.indices.iter().enumerate() {
        let a = Augmentation::Shift.params(11, 2, i).unwrap();
        assert!(!a.flip && a.pad == SHIFT_PAD);
        moved += usize::from((a.top, a.left) != (SHIFT_PAD, SHIFT_PAD));
        let img = train.image(i).unwrap();
        let out = &batch.input.data()[slot * 784..][..784];
        for y in 0..28 {
            for x in 0..28 {
                let (sy, sx) = (
                    (y + a.top) as isize - SHIFT_PAD as isize,
                    (x + a.left) as isize - SHIFT_PAD as isize,
                );
                let v = if (0..28).contains(&sy) && (0..28).contains(&sx) {
                    img[sy as usize * 28 + sx as usize]
                } else {
                    0
                };
                assert_eq!(out[y * 28 + x], (v as f32 / 255.0 - mean[0]) / std[0]);
            }
        }
    }
    assert!(moved > 8, "only {moved} of 16 samples shifted");
}

#[test]
fn truncate_keeps_the_first_samples() {
    let mut d = (*mnist_train()).clone();
    d.truncate(100);
    assert_eq!(d.len(), 100);
    assert_eq!(d.image(99), mnist_train().image(99));
    assert!(d.image(100).is_none());
    let mut e = (*nmnist_train()).clone();
    e.truncate(3);
    assert_eq!(e.len(), 3);
    assert_eq!(e.events(2), nmnist_train().events(2));
}

#[test]
fn augmented_batches_depend_only_on_seed_epoch_and_sample() {
    let train = cifar_train();
    let cfg = LoaderConfig::train(32, 4, 7, 2);
    let take = |cfg: &LoaderConfig| {
        Loader::new(train.clone(), cfg)
            .unwrap()
            .take(3)
            .collect::<Vec<_>>()
    };
    let a = take(&cfg);
    assert_eq!(a, take(&cfg));
    let next_epoch = take(&LoaderConfig { epoch: 3, ..cfg });
    assert_ne!(a[0].indices, next_epoch[0].indices);
    // The same sample in another position (another rank's order) gets the same pixels.
    let i = a[1].indices[5];
    let alone = Loader::with_order(
        train.clone(),
        vec![17, i],
        &LoaderConfig {
            batch_size: 2,
            ..cfg
        },
    )
    .unwrap()
    .next()
    .unwrap();
    assert_eq!(
        &alone.input.data()[3072..],
        &a[1].input.data()[5 * 3072..][..3072]
    );
}
