//! The event-driven paths against the dense im2col + GEMM kernels on the same spike input.
//!
//! Tolerance: the two paths sum the same products in different orders (and the sparse one
//! scales by `s` once at the end), so they agree to f32 rounding of the sum:
//! `|sparse − dense| ≤ 1e-5·(1 + Σ|terms|)`, with `Σ|terms|` from an f64 reference.

use super::super::{backward_weight as dense_wgrad, forward as dense_forward, ConvWorkspace};
use super::*;

fn lcg(seed: &mut u64) -> f32 {
    *seed = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (*seed >> 40) as f32 / (1u64 << 24) as f32
}

/// Spikes `0`/`s` with density `p`.
fn spikes(n: usize, p: f32, s: f32, seed: &mut u64) -> Vec<f32> {
    (0..n)
        .map(|_| if lcg(seed) < p { s } else { 0.0 })
        .collect()
}

fn signed(n: usize, seed: &mut u64) -> Vec<f32> {
    (0..n).map(|_| lcg(seed) * 2.0 - 1.0).collect()
}

/// Σ|terms| of every output of the forward and of the weight gradient (f64).
fn magnitudes(g: &ConvGeom, x: &[f32], w: &[f32], dy: &[f32]) -> (Vec<f64>, Vec<f64>) {
    let (mut ym, mut wm) = (vec![0.0; g.n * g.out_img()], vec![0.0; g.weight_len()]);
    for n in 0..g.n {
        for o in 0..g.c_out {
            for oy in 0..g.oh {
                for ox in 0..g.ow {
                    let yi = ((n * g.c_out + o) * g.oh + oy) * g.ow + ox;
                    for c in 0..g.c_in {
                        for kh in 0..g.k {
                            for kw in 0..g.k {
                                let iy = (oy * g.stride + kh) as isize - g.pad as isize;
                                let ix = (ox * g.stride + kw) as isize - g.pad as isize;
                                if iy < 0 || ix < 0 || iy >= g.h as isize || ix >= g.w as isize {
                                    continue;
                                }
                                let xi = ((n * g.c_in + c) * g.h + iy as usize) * g.w + ix as usize;
                                let wi = ((o * g.c_in + c) * g.k + kh) * g.k + kw;
                                ym[yi] += (w[wi] as f64 * x[xi] as f64).abs();
                                wm[wi] += (x[xi] as f64 * dy[yi] as f64).abs();
                            }
                        }
                    }
                }
            }
        }
    }
    (ym, wm)
}

fn assert_close(what: &str, got: &[f32], want: &[f32], mag: &[f64]) {
    for (i, ((&a, &b), &m)) in got.iter().zip(want).zip(mag).enumerate() {
        let tol = 1e-5 * (1.0 + m);
        assert!(
            ((a - b) as f64).abs() <= tol,
            "{what}[{i}]: sparse {a} vs dense {b} (tol {tol})"
        );
    }
}

const SHAPES: &[[usize; 8]] = &[
    // n, c_in, h, w, c_out, k, stride, pad
    [3, 4, 7, 5, 8, 3, 1, 1],
    [2, 3, 9, 9, 5, 3, 2, 1],
    [2, 5, 8, 6, 16, 1, 2, 0],
    [2, 2, 5, 7, 3, 1, 1, 0],
    [1, 3, 6, 6, 4, 5, 1, 2],
    [2, 2, 7, 7, 9, 3, 3, 0],
    [1, 2, 13, 13, 24, 3, 1, 1],  // planes longer than one u64 word
    [2, 32, 14, 14, 40, 3, 1, 1], // dense side: Winograd F(4×4) where AVX-512 is
    // Channel masks of more than one word, C_in not a multiple of 64; C_out over one
    // register block (64) with a partial last block and a partial last vector.
    [2, 70, 7, 9, 75, 3, 1, 1],
    [1, 130, 6, 5, 130, 3, 2, 1],
    [2, 65, 9, 8, 66, 3, 2, 0],
    [1, 64, 5, 5, 64, 3, 1, 0],
    [3, 7, 11, 3, 129, 1, 1, 0],
    [1, 70, 10, 11, 20, 3, 1, 1], // several pixel chunks, the last one partial
];

#[test]
fn sparse_forward_and_weight_gradient_match_the_dense_path() {
    let mut seed = 5;
    for &[n, ci, h, w, co, k, s, p] in SHAPES {
        let g = ConvGeom::new(n, ci, h, w, co, k, s, p).unwrap();
        for (density, scale) in [(0.0, 1.0), (0.1, 0.7), (0.5, 1.3), (1.0, 2.0)] {
            let x = spikes(n * g.in_img(), density, scale, &mut seed);
            let wgt = signed(g.weight_len(), &mut seed);
            let bias = signed(co, &mut seed);
            let dy = signed(n * g.out_img(), &mut seed);
            let (ym, wm) = magnitudes(&g, &x, &wgt, &dy);
            let bits = SpikeBits::from_f32(&x, n, ci, h * w, scale);

            let mut y_dense = vec![f32::NAN; n * g.out_img()];
            dense_forward(&g, &x, &wgt, Some(&bias), &mut y_dense);
            let wp = PackedWeight::new(&g, &wgt);
            let mut y_sparse = vec![f32::NAN; n * g.out_img()];
            forward(&g, &bits, &wp, Some(&bias), &mut y_sparse);
            assert_close("y", &y_sparse, &y_dense, &ym);

            let acc0 = signed(g.weight_len(), &mut seed);
            let mut dw_dense = acc0.clone();
            dense_wgrad(&g, &x, &dy, &mut dw_dense, &mut ConvWorkspace::default());
            let mut dw_sparse = acc0.clone();
            backward_weight(&g, &bits, &dy, &mut dw_sparse);
            assert_close("dw", &dw_sparse, &dw_dense, &wm);
        }
    }
}

#[test]
fn pack_unpack_round_trips_and_counts() {
    let mut seed = 9;
    for plane in [0, 1, 63, 64, 65, 200] {
        let x = spikes(3 * 2 * plane, 0.3, 0.5, &mut seed);
        let b = SpikeBits::from_f32(&x, 3, 2, plane, 0.5);
        let mut back = vec![f32::NAN; x.len()];
        b.unpack(&mut back);
        assert_eq!(back, x);
        let ones = x.iter().filter(|&&v| v != 0.0).count() as u64;
        assert_eq!(b.ones(), ones);
        assert!(b.bytes() <= 8 * 6 * plane.div_ceil(64));
    }
}

/// Bits packed plane by plane (`pack_plane`, as a LIF layer packs its output) and assembled
/// by `from_words` equal `pack`'s, padding bits cleared and ones counted, whatever the padding
/// held.
#[test]
fn words_packed_by_planes_equal_pack() {
    let mut seed = 13;
    for plane in [0, 1, 49, 63, 64, 65, 196, 200] {
        let (n, c) = (3, 2);
        let x = spikes(n * c * plane, 0.3, 0.5, &mut seed);
        let want = SpikeBits::from_f32(&x, n, c, plane, 0.5);
        let pw = plane.div_ceil(64);
        let mut words = vec![0u64; n * c * pw];
        for (p, w) in words.chunks_mut(pw.max(1)).enumerate().take(n * c) {
            pack_plane(&x[p * plane..(p + 1) * plane], &mut w[..pw]);
            if plane % 64 != 0 {
                w[pw - 1] |= !0 << (plane % 64); // garbage in the padding
            }
        }
        let got = SpikeBits::from_words(n, c, plane, 0.5, words);
        assert_eq!(got, want, "plane {plane}");
        assert_eq!(got.geometry(), (n, c, plane));
        assert_eq!(got.plane_words(), pw);
    }
}

/// `add_to` sums bit for bit what adding the unpacked tensor sums, `-0.0` included (an unset
/// bit adds `+0.0`, which turns `-0.0` into `+0.0`).
#[test]
fn add_to_matches_adding_the_unpacked_tensor() {
    let mut seed = 21;
    for plane in [0, 1, 63, 64, 65, 200] {
        let x = spikes(3 * 2 * plane, 0.3, 0.5, &mut seed);
        let b = SpikeBits::from_f32(&x, 3, 2, plane, 0.5);
        let mut base = signed(x.len(), &mut seed);
        for v in base.iter_mut().step_by(3) {
            *v = -0.0;
        }
        let mut want = base.clone();
        crate::kernels::elementwise::par_add_assign(&mut want, &x);
        let mut got = base;
        b.add_to(&mut got);
        let bits = |v: &[f32]| v.iter().map(|e| e.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&got), bits(&want), "plane {plane}");
    }
}

#[test]
fn sparse_results_are_bit_identical_for_1_2_and_4_threads() {
    let mut seed = 3;
    let g = ConvGeom::new(6, 70, 9, 9, 80, 3, 1, 1).unwrap();
    let x = spikes(g.n * g.in_img(), 0.15, 1.1, &mut seed);
    let wgt = signed(g.weight_len(), &mut seed);
    let dy = signed(g.n * g.out_img(), &mut seed);
    let run = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| {
            let bits = SpikeBits::from_f32(&x, g.n, g.c_in, g.h * g.w, 1.1);
            let wp = PackedWeight::new(&g, &wgt);
            let mut y = vec![0.0; g.n * g.out_img()];
            forward(&g, &bits, &wp, None, &mut y);
            let mut dw = vec![0.0; g.weight_len()];
            backward_weight(&g, &bits, &dy, &mut dw);
            (y, dw)
        })
    };
    let same = |p: &[f32], q: &[f32]| p.iter().zip(q).all(|(a, b)| a.to_bits() == b.to_bits());
    let a = run(1);
    for b in [run(2), run(4)] {
        assert!(same(&a.0, &b.0));
        assert!(same(&a.1, &b.1));
    }
}

#[test]
fn taps_cover_exactly_the_outputs_an_input_reaches() {
    for (k, s, p, len_in) in [
        (3, 1, 1, 7),
        (3, 2, 1, 9),
        (1, 2, 0, 8),
        (5, 1, 2, 6),
        (3, 3, 0, 7),
    ] {
        let len_out = (len_in + 2 * p - k) / s + 1;
        for i in 0..len_in {
            let (k0, o0, cnt) = taps(i, k, s, p, len_out);
            let got: Vec<(usize, usize)> = (0..cnt).map(|a| (k0 + a * s, o0 - a)).collect();
            let mut want = Vec::new();
            for kk in 0..k {
                for o in 0..len_out {
                    if o * s + kk == i + p {
                        want.push((kk, o));
                    }
                }
            }
            assert_eq!(got, want, "k={k} s={s} p={p} i={i}");
        }
    }
}

#[test]
fn forward_switch_point_follows_the_measured_shapes() {
    let d = |ci, k| fwd_max_density(&ConvGeom::new(1, ci, 8, 8, 64, k, 1, k / 2).unwrap());
    // ResNet-19 layers 1 and 3, the MNIST conv2, the 1×1 shortcut (see `docs/perf.md`).
    assert!((d(128, 3) - 0.467).abs() < 0.01);
    assert!((d(512, 3) - 0.492).abs() < 0.01);
    assert!((d(32, 3) - 0.368).abs() < 0.01);
    assert!((d(128, 1) - 0.203).abs() < 0.01);
    assert_eq!(d(3, 1), 0.0);
    assert!(d(4096, 3) <= FWD_MAX_DENSITY);
    // Against Winograd F(4×4) (at least 12 wide, AVX-512): the MNIST conv2 at 14×14 and
    // ResNet-19 layers 1 and 2 at their own sizes (planes four tiles wide: 2/C_in).
    let at = |ci, hw| fwd_max_density(&ConvGeom::new(1, ci, hw, hw, 64, 3, 1, 1).unwrap());
    if crate::kernels::conv::winograd::f43::preferred(
        &ConvGeom::new(1, 32, 14, 14, 64, 3, 1, 1).unwrap(),
    ) {
        assert!((at(32, 14) - 0.2125).abs() < 0.01);
        assert!((at(128, 32) - 0.181).abs() < 0.01);
        assert!((at(256, 16) - 0.158).abs() < 0.005);
    } else {
        assert!((at(32, 14) - 0.368).abs() < 0.01);
    }
}

/// The weight gradient's switch: 0.08 for 1×1 and where Winograd F(3×3, 4×4) is the dense
/// path (the MNIST conv2 with AVX-512), else 0.18.
#[test]
fn weight_gradient_switch_point_follows_the_dense_path() {
    let g = |ci, hw, co, k| ConvGeom::new(1, ci, hw, hw, co, k, 1, k / 2).unwrap();
    assert_eq!(wgrad_max_density(&g(128, 32, 256, 1)), 0.08);
    assert_eq!(wgrad_max_density(&g(512, 8, 512, 3)), 0.18);
    let mnist = g(32, 14, 64, 3);
    let want = if crate::kernels::conv::winograd::weight::takes_f4x4(&mnist) {
        0.08
    } else {
        0.18
    };
    assert_eq!(wgrad_max_density(&mnist), want);
}

#[test]
fn packed_weight_rows_are_cache_line_aligned() {
    let g = ConvGeom::new(1, 3, 5, 5, 70, 3, 1, 1).unwrap();
    for _ in 0..4 {
        let wp = PackedWeight::new(&g, &vec![1.0; g.weight_len()]);
        assert_eq!(wp.data().as_ptr() as usize % 64, 0);
        // 64 outputs of the first block, then 6 padded to one vector.
        assert_eq!(wp.data().len(), 27 * (64 + 8));
    }
}

/// A repack reuses the buffer without refilling it: it must equal a fresh pack, also when the
/// previous shape had the same length but wrote the lanes that are now padding (72 outputs,
/// then 70), and across blocks packed on different tasks (130 outputs: three blocks).
#[test]
fn a_repacked_weight_equals_a_fresh_pack() {
    let mut seed = 21;
    let g72 = ConvGeom::new(1, 3, 5, 5, 72, 3, 1, 1).unwrap();
    let g70 = ConvGeom::new(1, 3, 5, 5, 70, 3, 1, 1).unwrap();
    let g130 = ConvGeom::new(1, 5, 5, 5, 130, 3, 1, 1).unwrap();
    let mut wp = PackedWeight::new(&g72, &signed(g72.weight_len(), &mut seed));
    for g in [g70, g70, g130, g130, g72] {
        let w = signed(g.weight_len(), &mut seed);
        wp.pack(&g, &w);
        assert!(wp.packed_for(&g));
        assert_eq!(wp.data(), PackedWeight::new(&g, &w).data(), "{g:?}");
    }
}

/// The 16-lane compare and the scalar tail agree with `e != 0.0` on full words, partial words,
/// and the values a spike tensor can hold (±0, the scale), plus stray non-zeros.
#[test]
fn packing_sets_exactly_the_non_zero_bits() {
    let mut seed = 9;
    for len in [1, 63, 64, 65, 200] {
        let x: Vec<f32> = (0..len)
            .map(|i| match lcg(&mut seed) {
                r if r < 0.6 => 0.0,
                r if r < 0.7 => -0.0,
                r if r < 0.95 => 0.75,
                _ => i as f32 - 50.0,
            })
            .collect();
        let bits = SpikeBits::from_f32(&x, 1, 1, len, 0.75);
        let words = bits.plane_bits(0, 0);
        for (i, &e) in x.iter().enumerate() {
            assert_eq!(
                (words[i / 64] >> (i % 64)) & 1 == 1,
                e != 0.0,
                "len {len}, i {i}"
            );
        }
        assert_eq!(
            bits.density(),
            x.iter().filter(|&&e| e != 0.0).count() as f64 / len as f64
        );
    }
}

/// The register-blocked row sums of the weight gradient add the rows in the same order as one
/// `add_row` per row, so the bits are the same: full 64-column blocks, a tail, repeated rows.
#[test]
fn blocked_row_sums_equal_row_by_row_adds() {
    let mut seed = 17;
    for len in [64, 128, 200, 13] {
        let rows = 9;
        let src: Vec<f32> = (0..rows * len).map(|_| lcg(&mut seed) - 0.5).collect();
        let start: Vec<f32> = (0..len).map(|_| lcg(&mut seed) * 3.0).collect();
        let qs: Vec<u32> = vec![3, 0, 8, 3, 5, 1];
        let mut want = start.clone();
        for &q in &qs {
            add_row(&mut want, &src[q as usize * len..(q as usize + 1) * len]);
        }
        let mut got = start.clone();
        sum_rows(&mut got, &src, len, &qs);
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&got), bits(&want), "len {len}");
        sum_rows(&mut got, &src, len, &[]);
        assert_eq!(bits(&got), bits(&want), "no rows: unchanged");
    }
}

/// The weight gradient transposes `dY` a group of images at a time; the group size changes
/// no bits (images are still summed in order), including a last group that is shorter.
#[test]
fn weight_gradient_bits_do_not_depend_on_the_image_group() {
    let mut seed = 23;
    let g = ConvGeom::new(7, 20, 6, 6, 72, 3, 1, 1).unwrap();
    let x = spikes(g.n * g.in_img(), 0.2, 0.7, &mut seed);
    let bits = SpikeBits::from_f32(&x, g.n, g.c_in, g.h * g.w, 0.7);
    let dy = signed(g.n * g.out_img(), &mut seed);
    let acc0 = signed(g.weight_len(), &mut seed);
    let run = |group_len: usize| {
        let mut dw = acc0.clone();
        backward_weight_grouped(&g, &bits, &dy, &mut dw, group_len);
        dw.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
    };
    let whole = run(usize::MAX);
    assert_eq!(run(1), whole, "one image per group");
    assert_eq!(run(3 * g.out_img()), whole, "groups of 3, last of 1");
    assert_ne!(whole, acc0.iter().map(|v| v.to_bits()).collect::<Vec<_>>());
}
