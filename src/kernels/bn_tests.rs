//! Batch-norm kernels against f64 references.

use super::*;

fn rand_vec(n: usize, seed: &mut u64, lo: f32, hi: f32) -> Vec<f32> {
    (0..n)
        .map(|_| {
            *seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            lo + (hi - lo) * ((*seed >> 40) as f32 / (1u64 << 24) as f32)
        })
        .collect()
}

fn channel(x: &[f32], d: BnDims, ch: usize) -> Vec<f64> {
    d.segments(ch)
        .flat_map(|r| x[r].iter().map(|&v| v as f64).collect::<Vec<_>>())
        .collect()
}

fn mean_var(v: &[f64]) -> (f64, f64) {
    let m = v.iter().sum::<f64>() / v.len() as f64;
    (
        m,
        v.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / v.len() as f64,
    )
}

const DIMS: &[BnDims] = &[
    BnDims { n: 3, c: 4, hw: 9 },
    BnDims { n: 2, c: 5, hw: 35 },
    BnDims { n: 1, c: 3, hw: 2 },
    BnDims { n: 4, c: 2, hw: 1 },
    // Several summation tasks, the last one short.
    BnDims {
        n: 19,
        c: 3,
        hw: 20,
    },
    BnDims {
        n: 2,
        c: 3,
        hw: 2500,
    },
];

#[test]
fn forward_and_backward_match_f64_reference() {
    let mut seed = 3;
    for &d in DIMS {
        let x = rand_vec(d.len(), &mut seed, -2.0, 3.0);
        let dy = rand_vec(d.len(), &mut seed, -1.0, 1.0);
        let gamma = rand_vec(d.c, &mut seed, 0.5, 1.5);
        let beta = rand_vec(d.c, &mut seed, -0.5, 0.5);
        let (mut mean, mut var) = (vec![f32::NAN; d.c], vec![f32::NAN; d.c]);
        batch_stats(&x, d, &mut mean, &mut var);
        let invstd: Vec<f32> = var.iter().map(|v| 1.0 / (v + 1e-5).sqrt()).collect();
        let scale: Vec<f32> = gamma.iter().zip(&invstd).map(|(g, r)| g * r).collect();
        let mut y = vec![f32::NAN; d.len()];
        normalize(&x, &mut y, d, &mean, &scale, &beta);
        let mut y2 = x.clone();
        normalize_inplace(&mut y2, d, &mean, &scale, &beta);
        assert!(y
            .iter()
            .zip(&y2)
            .all(|(a, b)| (a - b).abs() <= 1e-6 * (1.0 + a.abs())));

        for batch in [true, false] {
            let mut g = dy.clone();
            let (mut dgam, mut dbet) = (vec![f32::NAN; d.c], vec![f32::NAN; d.c]);
            backward(
                &x, &mut g, d, &mean, &invstd, &gamma, batch, &mut dgam, &mut dbet,
            );
            for ch in 0..d.c {
                let xs = channel(&x, d, ch);
                let dys = channel(&dy, d, ch);
                let gs = channel(&g, d, ch);
                let ys = channel(&y, d, ch);
                let (m, v) = mean_var(&xs);
                assert!((mean[ch] as f64 - m).abs() < 1e-5 && (var[ch] as f64 - v).abs() < 1e-5);
                let r = 1.0 / (v + 1e-5).sqrt();
                let xh: Vec<f64> = xs.iter().map(|x| (x - m) * r).collect();
                let db: f64 = dys.iter().sum();
                let dg: f64 = dys.iter().zip(&xh).map(|(a, b)| a * b).sum();
                let cnt = xs.len() as f64;
                let gm = gamma[ch] as f64;
                assert!(
                    (dbet[ch] as f64 - db).abs() < 1e-4 * (1.0 + db.abs()),
                    "dbeta"
                );
                assert!(
                    (dgam[ch] as f64 - dg).abs() < 1e-4 * (1.0 + dg.abs()),
                    "dgamma"
                );
                for i in 0..xs.len() {
                    let want_y = gm * xh[i] + beta[ch] as f64;
                    assert!((ys[i] - want_y).abs() < 1e-5 * (1.0 + want_y.abs()), "y");
                    let want = if batch {
                        gm * r * (dys[i] - db / cnt - xh[i] * dg / cnt)
                    } else {
                        gm * r * dys[i]
                    };
                    assert!(
                        (gs[i] - want).abs() < 1e-4 * (1.0 + want.abs()),
                        "{d:?} dx {i}"
                    );
                }
            }
        }
    }
}

#[test]
fn statistics_stay_accurate_for_large_offset_channels() {
    // ResNet-19's largest BN: M = 64·64·64 = 262 144 values per channel, here with a mean far
    // from zero relative to the spread (the case where a naive Σx² − μ² cancels).
    let d = BnDims {
        n: 64,
        c: 2,
        hw: 4096,
    };
    let mut seed = 17;
    let mut x = rand_vec(d.len(), &mut seed, -1.0, 1.0);
    for v in &mut x {
        *v += 300.0;
    }
    let (mut mean, mut var) = (vec![0.0; 2], vec![0.0; 2]);
    batch_stats(&x, d, &mut mean, &mut var);
    for ch in 0..2 {
        let (m, v) = mean_var(&channel(&x, d, ch));
        assert!((mean[ch] as f64 - m).abs() < 1e-4, "{} vs {m}", mean[ch]);
        assert!((var[ch] as f64 - v).abs() < 1e-4 * v, "{} vs {v}", var[ch]);
    }
}

#[test]
fn running_update_uses_unbiased_variance() {
    let (mut rm, mut rv) = (vec![0.0, 1.0], vec![1.0, 2.0]);
    update_running(&mut rm, &mut rv, &[2.0, 3.0], &[0.5, 1.0], 5, 0.1);
    assert!((rm[0] - 0.2).abs() < 1e-7 && (rm[1] - 1.2).abs() < 1e-7);
    // 0.9·1 + 0.1·0.5·5/4 = 0.9625; 0.9·2 + 0.1·1·1.25 = 1.925
    assert!((rv[0] - 0.9625).abs() < 1e-7 && (rv[1] - 1.925).abs() < 1e-7);
}

#[test]
fn results_are_bit_identical_for_1_and_4_threads() {
    let d = BnDims {
        n: 8,
        c: 6,
        hw: 3000,
    };
    let mut seed = 23;
    let x = rand_vec(d.len(), &mut seed, -1.0, 2.0);
    let dy = rand_vec(d.len(), &mut seed, -1.0, 1.0);
    let gamma = vec![1.3; d.c];
    let run = |t: usize| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(t)
            .build()
            .unwrap()
            .install(|| {
                let (mut mean, mut var) = (vec![0.0; d.c], vec![0.0; d.c]);
                batch_stats(&x, d, &mut mean, &mut var);
                let invstd: Vec<f32> = var.iter().map(|v| 1.0 / (v + 1e-5).sqrt()).collect();
                let mut y = vec![0.0; d.len()];
                normalize(&x, &mut y, d, &mean, &invstd, &gamma);
                let mut g = dy.clone();
                let (mut dg, mut db) = (vec![0.0; d.c], vec![0.0; d.c]);
                backward(
                    &x, &mut g, d, &mean, &invstd, &gamma, true, &mut dg, &mut db,
                );
                [mean, var, y, g, dg, db].concat()
            })
    };
    let (a, b) = (run(1), run(4));
    assert!(a.iter().zip(&b).all(|(p, q)| p.to_bits() == q.to_bits()));
}

#[test]
fn out_of_place_normalize_gives_the_in_place_bits() {
    let mut seed = 41;
    // Lengths with and without a lane remainder, and an empty plane.
    for len in [0, 1, 7, 8, 13, 196, 784] {
        let x = rand_vec(len, &mut seed, -3.0, 3.0);
        let mut inplace = x.clone();
        normalize_plane_inplace(&mut inplace, 0.3, 1.7, -0.2);
        let mut out = vec![f32::NAN; len];
        normalize_plane(&x, &mut out, 0.3, 1.7, -0.2);
        assert!(
            inplace
                .iter()
                .zip(&out)
                .all(|(a, b)| a.to_bits() == b.to_bits()),
            "length {len}"
        );
    }
}

#[test]
fn plane_grad_sums_match_f64_at_every_tail_length() {
    let mut seed = 21;
    // Lengths around the 16- and 32-lane steps, the mnist-cnn planes (196, 784) and past one
    // f32 block.
    for n in [
        0, 1, 15, 16, 17, 31, 32, 33, 48, 63, 196, 784, 1024, 1500, 2500,
    ] {
        let dy = rand_vec(n, &mut seed, -1.0, 1.0);
        let x = rand_vec(n, &mut seed, -2.0, 3.0);
        let m = 0.25f32;
        let (dot, sum) = plane_grad_sums(&dy, &x, m);
        let want_dot: f64 = dy
            .iter()
            .zip(&x)
            .map(|(&a, &b)| a as f64 * (b - m) as f64)
            .sum();
        let want_sum: f64 = dy.iter().map(|&a| a as f64).sum();
        let mag: f64 = dy.iter().zip(&x).map(|(&a, &b)| (a * b).abs() as f64).sum();
        assert!(
            (dot - want_dot).abs() <= 1e-5 * (mag + 1.0),
            "n {n}: dot {dot} vs {want_dot}"
        );
        assert!(
            (sum - want_sum).abs() <= 1e-5 * (n as f64 + 1.0),
            "n {n}: sum {sum} vs {want_sum}"
        );
    }
}
