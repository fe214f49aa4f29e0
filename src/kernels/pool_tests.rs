//! Pooling kernels against direct references, including PyTorch's tie and padding rules.

use super::*;

fn rand_vec(n: usize, seed: &mut u64) -> Vec<f32> {
    (0..n)
        .map(|_| {
            *seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((*seed >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

/// Direct max pool: scans the padded window (padding = −∞) in row-major order, keeping the
/// first strict maximum.
fn ref_max(g: &PoolGeom, x: &[f32]) -> (Vec<f32>, Vec<u32>) {
    let (mut y, mut a) = (Vec::new(), Vec::new());
    for p in 0..g.planes {
        for oy in 0..g.oh {
            for ox in 0..g.ow {
                let (mut best, mut at) = (f32::NEG_INFINITY, None);
                for ky in 0..g.k {
                    for kx in 0..g.k {
                        let iy = (oy * g.stride + ky) as isize - g.pad as isize;
                        let ix = (ox * g.stride + kx) as isize - g.pad as isize;
                        if iy < 0 || ix < 0 || iy >= g.h as isize || ix >= g.w as isize {
                            continue;
                        }
                        let idx = iy as usize * g.w + ix as usize;
                        let v = x[p * g.in_plane() + idx];
                        if at.is_none() || v > best {
                            best = v;
                            at = Some(idx);
                        }
                    }
                }
                y.push(best);
                a.push(at.unwrap() as u32);
            }
        }
    }
    (y, a)
}

const GEOMS: &[[usize; 6]] = &[
    // planes, h, w, k, stride, pad
    [6, 6, 6, 2, 2, 0],
    [4, 7, 5, 2, 2, 0],
    [3, 6, 6, 3, 2, 1],
    [5, 7, 5, 3, 1, 1],
    [2, 9, 8, 5, 2, 2],
    [3, 5, 7, 3, 3, 0],
    [2, 1, 1, 1, 1, 0],
    [2, 2, 3, 2, 1, 1],
];

#[test]
fn max_pool_matches_reference_and_routes_gradient_to_argmax() {
    let mut seed = 2;
    for s in GEOMS {
        let g = PoolGeom::new(s[0], s[1], s[2], s[3], s[4], s[5]).unwrap();
        // Coarse values make ties frequent.
        let x: Vec<f32> = rand_vec(g.planes * g.in_plane(), &mut seed)
            .iter()
            .map(|v| (v * 2.0).round())
            .collect();
        let (ry, ra) = ref_max(&g, &x);
        let mut y = vec![f32::NAN; ry.len()];
        let mut a = vec![u32::MAX; ry.len()];
        max_forward(&g, &x, &mut y, Some(&mut a));
        assert_eq!(y, ry, "{s:?}");
        assert_eq!(a, ra, "{s:?}");
        let mut y2 = vec![f32::NAN; ry.len()];
        max_forward(&g, &x, &mut y2, None);
        assert_eq!(y2, ry);

        let dy = rand_vec(y.len(), &mut seed);
        let mut dx = vec![f32::NAN; x.len()];
        max_backward(&g, &dy, &a, &mut dx);
        let mut want = vec![0.0f32; x.len()];
        for (o, (&d, &i)) in dy.iter().zip(&ra).enumerate() {
            want[(o / g.out_plane()) * g.in_plane() + i as usize] += d;
        }
        assert_eq!(dx, want, "{s:?}");
    }
}

#[test]
fn max_pool_ties_go_to_the_first_element_in_row_major_order() {
    // Spikes after a LIF layer: every window holds only 0 and θ.
    let th = 0.75;
    #[rustfmt::skip]
    let x = [
        0.0, th,  th,  0.0,
        th,  th,  0.0, 0.0,
        0.0, 0.0, 0.0, 0.0,
        0.0, 0.0, 0.0, th,
    ];
    let g = PoolGeom::new(1, 4, 4, 2, 2, 0).unwrap();
    let (mut y, mut a) = ([0.0; 4], [0u32; 4]);
    max_forward(&g, &x, &mut y, Some(&mut a));
    assert_eq!(y, [th, th, 0.0, th]);
    // Window (0,0) = [0, θ; θ, θ] → index 1; window (0,1) = [θ, 0; 0, 0] → 2;
    // all-zero window (1,0) → its first element 8; window (1,1) → 15.
    assert_eq!(a, [1, 2, 8, 15]);
    // With padding the first in-bounds element wins an all-equal window.
    let g = PoolGeom::new(1, 4, 4, 3, 2, 1).unwrap();
    let (mut y, mut a) = ([0.0; 4], [0u32; 4]);
    max_forward(&g, &[0.0; 16], &mut y, Some(&mut a));
    assert_eq!(a, [0, 1, 4, 5]);
}

#[test]
fn max_pool_propagates_nan_like_pytorch() {
    let g = PoolGeom::new(1, 2, 2, 2, 2, 0).unwrap();
    let (mut y, mut a) = ([0.0], [0u32]);
    max_forward(&g, &[1.0, f32::NAN, 5.0, 2.0], &mut y, Some(&mut a));
    assert!(y[0].is_nan() && a[0] == 1);
}

#[test]
fn avg_pool_matches_reference() {
    let mut seed = 4;
    for s in GEOMS.iter().filter(|s| s[5] == 0) {
        let g = PoolGeom::new(s[0], s[1], s[2], s[3], s[4], 0).unwrap();
        let x = rand_vec(g.planes * g.in_plane(), &mut seed);
        let dy = rand_vec(g.planes * g.out_plane(), &mut seed);
        let mut y = vec![f32::NAN; dy.len()];
        avg_forward(&g, &x, &mut y);
        let mut dx = vec![f32::NAN; x.len()];
        avg_backward(&g, &dy, &mut dx);
        let mut want_dx = vec![0.0f64; x.len()];
        let kk = (g.k * g.k) as f64;
        for p in 0..g.planes {
            for oy in 0..g.oh {
                for ox in 0..g.ow {
                    let o = p * g.out_plane() + oy * g.ow + ox;
                    let mut s = 0.0f64;
                    for iy in oy * g.stride..oy * g.stride + g.k {
                        for ix in ox * g.stride..ox * g.stride + g.k {
                            let i = p * g.in_plane() + iy * g.w + ix;
                            s += x[i] as f64;
                            want_dx[i] += dy[o] as f64 / kk;
                        }
                    }
                    assert!((y[o] as f64 - s / kk).abs() < 1e-6, "{s:?}");
                }
            }
        }
        for (a, b) in dx.iter().zip(&want_dx) {
            assert!((*a as f64 - b).abs() < 1e-6);
        }
    }
}

#[test]
fn global_average_pool_matches_reference() {
    let mut seed = 8;
    let (planes, hw) = (7, 13);
    let x = rand_vec(planes * hw, &mut seed);
    let mut y = vec![f32::NAN; planes];
    global_avg_forward(&x, hw, &mut y);
    let dy = rand_vec(planes, &mut seed);
    let mut dx = vec![f32::NAN; planes * hw];
    global_avg_backward(&dy, hw, &mut dx);
    for p in 0..planes {
        let m: f64 = x[p * hw..(p + 1) * hw]
            .iter()
            .map(|&v| v as f64)
            .sum::<f64>()
            / hw as f64;
        assert!((y[p] as f64 - m).abs() < 1e-6);
        assert!(dx[p * hw..(p + 1) * hw]
            .iter()
            .all(|&v| v == dy[p] / hw as f32));
    }
}

#[test]
fn geometry_follows_pytorch_limits() {
    assert!(PoolGeom::new(1, 4, 4, 3, 2, 2).is_none(), "pad > k/2");
    assert!(
        PoolGeom::new(1, 1, 4, 3, 1, 0).is_none(),
        "window larger than input"
    );
    assert!(PoolGeom::new(1, 1, 4, 3, 1, 1).is_some());
    let g = PoolGeom::new(1, 7, 5, 2, 2, 0).unwrap();
    assert_eq!((g.oh, g.ow), (3, 2));
}

#[test]
fn results_are_bit_identical_for_1_and_4_threads() {
    let mut seed = 12;
    let g = PoolGeom::new(300, 9, 9, 3, 2, 1).unwrap();
    let x = rand_vec(g.planes * g.in_plane(), &mut seed);
    let dy = rand_vec(g.planes * g.out_plane(), &mut seed);
    let run = |t: usize| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(t)
            .build()
            .unwrap()
            .install(|| {
                let mut y = vec![0.0; dy.len()];
                let mut a = vec![0; dy.len()];
                max_forward(&g, &x, &mut y, Some(&mut a));
                let mut dx = vec![0.0; x.len()];
                max_backward(&g, &dy, &a, &mut dx);
                let mut gy = vec![0.0; g.planes];
                global_avg_forward(&x, g.in_plane(), &mut gy);
                [y, dx, gy].concat()
            })
    };
    let (a, b) = (run(1), run(4));
    assert!(a.iter().zip(&b).all(|(p, q)| p.to_bits() == q.to_bits()));
}
