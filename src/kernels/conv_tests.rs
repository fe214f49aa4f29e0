//! Conv kernels against a direct 7-loop f64 convolution on awkward shapes.
#![allow(clippy::needless_range_loop)] // index loops mirror the textbook formula

use super::im2col::{col2im, im2col, valid_range};
use super::*;

/// True if `a` and `b` hold the same floats bit for bit.
pub(super) fn same_bits(a: &[f32], b: &[f32]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits())
}

/// `c` batch-norm backward affines with random coefficients near a training batch norm's.
pub(super) fn rand_grad_affines(c: usize, seed: &mut u64) -> Vec<crate::kernels::bn::GradAffine> {
    rand_vec(4 * c, seed)
        .chunks_exact(4)
        .map(|k| crate::kernels::bn::GradAffine {
            a: 1.0 + 0.5 * k[0],
            b: 0.1 * k[1],
            c: 0.01 * k[2],
            mean: 0.3 * k[3],
        })
        .collect()
}

pub(super) fn rand_vec(n: usize, seed: &mut u64) -> Vec<f32> {
    (0..n)
        .map(|_| {
            *seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((*seed >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

/// (value, Σ|terms|) per element: the second bounds the f32 summation error.
pub(super) struct Ref {
    pub(super) y: Vec<(f64, f64)>,
    pub(super) dx: Vec<(f64, f64)>,
    pub(super) dw: Vec<(f64, f64)>,
    pub(super) db: Vec<(f64, f64)>,
}

pub(super) fn reference(g: &ConvGeom, x: &[f32], w: &[f32], b: &[f32], dy: &[f32]) -> Ref {
    let mut r = Ref {
        y: vec![(0.0, 0.0); g.n * g.out_img()],
        dx: vec![(0.0, 0.0); g.n * g.in_img()],
        dw: vec![(0.0, 0.0); g.weight_len()],
        db: vec![(0.0, 0.0); g.c_out],
    };
    let add = |e: &mut (f64, f64), t: f64| {
        e.0 += t;
        e.1 += t.abs();
    };
    for n in 0..g.n {
        for o in 0..g.c_out {
            for oy in 0..g.oh {
                for ox in 0..g.ow {
                    let yi = ((n * g.c_out + o) * g.oh + oy) * g.ow + ox;
                    add(&mut r.y[yi], b[o] as f64);
                    add(&mut r.db[o], dy[yi] as f64);
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
                                add(&mut r.y[yi], w[wi] as f64 * x[xi] as f64);
                                add(&mut r.dx[xi], w[wi] as f64 * dy[yi] as f64);
                                add(&mut r.dw[wi], x[xi] as f64 * dy[yi] as f64);
                            }
                        }
                    }
                }
            }
        }
    }
    r
}

pub(super) fn assert_close(what: &str, got: &[f32], want: &[(f64, f64)], offset: &[f32]) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (&gv, &(wv, mag))) in got.iter().zip(want).enumerate() {
        let wv = wv + offset.get(i).map_or(0.0, |&v| v as f64);
        // f32 sums of K products: error well below 1e-5 of the sum of magnitudes.
        let tol = 1e-5 * (mag + offset.get(i).map_or(0.0, |v| v.abs() as f64)) + 1e-6;
        assert!(
            (gv as f64 - wv).abs() <= tol,
            "{what}[{i}]: got {gv}, want {wv} (tol {tol})"
        );
    }
}

struct Outputs {
    y: Vec<f32>,
    dx: Vec<f32>,
    dw: Vec<f32>,
    db: Vec<f32>,
}

/// Runs all four kernels; outputs that are overwritten start as NaN, accumulated ones (`dw`,
/// `db`) start at `acc0` to check the `+=` contract.
fn run(g: &ConvGeom, x: &[f32], w: &[f32], b: &[f32], dy: &[f32], acc0: &[f32]) -> Outputs {
    let mut ws = ConvWorkspace::default();
    let mut y = vec![f32::NAN; g.n * g.out_img()];
    forward(g, x, w, Some(b), &mut y);
    let mut dx = vec![f32::NAN; g.n * g.in_img()];
    backward_input(g, dy, w, &mut dx);
    let mut dw = acc0[..g.weight_len()].to_vec();
    backward_weight(g, x, dy, &mut dw, &mut ws);
    let mut db = acc0[..g.c_out].to_vec();
    backward_bias(g, dy, &mut db);
    Outputs { y, dx, dw, db }
}

const SHAPES: &[[usize; 8]] = &[
    // n, c_in, h, w, c_out, k, stride, pad
    [2, 3, 7, 5, 5, 3, 1, 1],
    [3, 5, 9, 9, 4, 3, 2, 2],
    [1, 1, 4, 4, 3, 1, 1, 0],
    [2, 127, 5, 4, 3, 1, 2, 0],
    [2, 5, 8, 6, 7, 5, 2, 2],
    [3, 4, 6, 6, 2, 1, 1, 0],
    [1, 2, 3, 3, 2, 3, 1, 0],
    [2, 3, 2, 3, 4, 3, 1, 2],
    [9, 2, 4, 5, 3, 3, 1, 1],
    [2, 64, 6, 6, 8, 3, 1, 1],
    // Winograd's input gradient (both channel counts ≥ winograd::MIN_CHANNELS).
    [2, 32, 6, 5, 33, 3, 1, 1],
    [3, 130, 5, 5, 3, 3, 1, 1],
    // Winograd F(4×4)'s forward and input gradient (≥ 32 channels, at least 12 wide).
    [2, 32, 13, 14, 40, 3, 1, 1],
    [2, 300, 3, 3, 4, 1, 1, 0],
    [2, 3, 6, 6, 4, 3, 3, 0],
    [1, 2, 4, 2, 3, 5, 1, 2],
    [2, 2, 1, 1, 2, 3, 1, 1],
    [1, 2, 5, 6, 2, 5, 1, 2],
];

#[test]
fn kernels_match_direct_convolution() {
    let mut seed = 1;
    for s in SHAPES {
        let g = ConvGeom::new(s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7]).unwrap();
        let x = rand_vec(g.n * g.in_img(), &mut seed);
        let w = rand_vec(g.weight_len(), &mut seed);
        let b = rand_vec(g.c_out, &mut seed);
        let dy = rand_vec(g.n * g.out_img(), &mut seed);
        let acc0 = rand_vec(g.weight_len(), &mut seed);
        let r = reference(&g, &x, &w, &b, &dy);
        let out = run(&g, &x, &w, &b, &dy, &acc0);
        let tag = format!("{s:?}");
        assert_close(&format!("{tag} y"), &out.y, &r.y, &[]);
        assert_close(&format!("{tag} dx"), &out.dx, &r.dx, &[]);
        assert_close(&format!("{tag} dw"), &out.dw, &r.dw, &acc0);
        assert_close(&format!("{tag} db"), &out.db, &r.db, &acc0);
    }
}

#[test]
fn results_are_bit_identical_for_1_and_4_threads() {
    let mut seed = 5;
    for s in SHAPES {
        let g = ConvGeom::new(s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7]).unwrap();
        let x = rand_vec(g.n * g.in_img(), &mut seed);
        let w = rand_vec(g.weight_len(), &mut seed);
        let b = rand_vec(g.c_out, &mut seed);
        let dy = rand_vec(g.n * g.out_img(), &mut seed);
        let acc0 = vec![0.0; g.weight_len()];
        let in_pool = |t: usize| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(t)
                .build()
                .unwrap()
                .install(|| run(&g, &x, &w, &b, &dy, &acc0))
        };
        let (a, c) = (in_pool(1), in_pool(4));
        let same = |p: &[f32], q: &[f32]| p.iter().zip(q).all(|(u, v)| u.to_bits() == v.to_bits());
        assert!(same(&a.y, &c.y) && same(&a.dx, &c.dx), "{s:?}");
        assert!(same(&a.dw, &c.dw) && same(&a.db, &c.db), "{s:?}");
    }
}

#[test]
fn col2im_is_the_adjoint_of_im2col() {
    // <col2im(c), x> == <c, im2col(x)> for random x, c: the identity that makes the input
    // gradient correct, on every test geometry (padding-only rows and columns, "same" convs).
    let mut seed = 9;
    for s in SHAPES.iter().chain(&[[1, 3, 3, 2, 1, 3, 2, 2]]) {
        let g = ConvGeom::new(1, s[1].min(4), s[2], s[3], 1, s[5], s[6], s[7]).unwrap();
        let x = rand_vec(g.in_img(), &mut seed);
        let c = rand_vec(g.col_rows() * g.out_plane(), &mut seed);
        let mut col = vec![f32::NAN; c.len()];
        let plane = g.out_plane();
        im2col(&g, &x, 0, g.c_in, &mut col, plane);
        // NaN-filled: col2im must write every element, never read one.
        let mut back = vec![f32::NAN; x.len()];
        col2im(&g, &mut c.clone(), plane, &mut back);
        let lhs: f64 = back
            .iter()
            .zip(&x)
            .map(|(a, b)| *a as f64 * *b as f64)
            .sum();
        let rhs: f64 = c.iter().zip(&col).map(|(a, b)| *a as f64 * *b as f64).sum();
        assert!(
            (lhs - rhs).abs() < 1e-5 * (1.0 + rhs.abs()),
            "{s:?}: {lhs} vs {rhs}"
        );
    }
}

#[test]
fn im2col_matches_its_definition_from_a_nan_filled_buffer() {
    let mut seed = 13;
    for s in SHAPES {
        let g = ConvGeom::new(1, s[1].min(4), s[2], s[3], 1, s[5], s[6], s[7]).unwrap();
        let x = rand_vec(g.in_img(), &mut seed);
        // Channels 1.. only (the weight-gradient blocks start mid-image).
        let c0 = (g.c_in > 1) as usize;
        let rows = (g.c_in - c0) * g.k * g.k;
        // Rows 3 apart inside a wider matrix: the gaps must stay untouched.
        let ld = g.out_plane() + 3;
        let mut col = vec![f32::NAN; rows * ld + 5];
        im2col(&g, &x, c0, g.c_in, &mut col, ld);
        for r in 0..rows {
            let (c, kh, kw) = (c0 + r / (g.k * g.k), r / g.k % g.k, r % g.k);
            for oy in 0..g.oh {
                for ox in 0..g.ow {
                    let iy = (oy * g.stride + kh) as isize - g.pad as isize;
                    let ix = (ox * g.stride + kw) as isize - g.pad as isize;
                    let inside = iy >= 0 && ix >= 0 && iy < g.h as isize && ix < g.w as isize;
                    let want = if inside {
                        x[(c * g.h + iy as usize) * g.w + ix as usize]
                    } else {
                        0.0
                    };
                    let got = col[r * ld + oy * g.ow + ox];
                    assert_eq!(got.to_bits(), want.to_bits(), "{s:?} row {r} ({oy},{ox})");
                }
            }
        }
        for r in 0..rows {
            let gap = &col[r * ld + g.out_plane()..(r + 1) * ld];
            assert!(
                gap.iter().all(|v| v.is_nan()),
                "{s:?}: gap after row {r} written"
            );
        }
        assert!(
            col[rows * ld..].iter().all(|v| v.is_nan()),
            "wrote past the rows"
        );
    }
}

#[test]
fn geometry_rejects_kernels_larger_than_the_padded_input() {
    assert!(ConvGeom::new(1, 1, 3, 5, 1, 5, 1, 1).is_some());
    assert!(ConvGeom::new(1, 1, 3, 5, 1, 5, 1, 0).is_none());
    assert!(ConvGeom::new(1, 1, 5, 5, 1, 0, 1, 0).is_none());
    assert!(ConvGeom::new(1, 1, 5, 5, 1, 3, 0, 0).is_none());
    let g = ConvGeom::new(4, 3, 7, 5, 2, 2, 2, 0).unwrap();
    assert_eq!((g.oh, g.ow), (3, 2));
    assert_eq!(valid_range(0, 2, 1, 5, 3), (1, 3));
    // Grouping: only when K > P, GEMM_COLS / P images, at most n.
    assert_eq!(ConvGeom::new(5, 25, 10, 20, 2, 3, 1, 1).unwrap().group(), 2);
    assert_eq!(
        ConvGeom::new(64, 512, 8, 8, 512, 3, 1, 1).unwrap().group(),
        8
    );
    assert_eq!(ConvGeom::new(3, 130, 5, 5, 3, 3, 1, 1).unwrap().group(), 3);
    assert_eq!(
        ConvGeom::new(64, 128, 32, 32, 256, 1, 2, 0)
            .unwrap()
            .group(),
        1
    );
    assert_eq!(
        ConvGeom::new(64, 128, 32, 32, 128, 3, 1, 1)
            .unwrap()
            .group(),
        1
    );
}

#[test]
fn empty_batch_is_a_no_op() {
    let g = ConvGeom::new(0, 2, 4, 4, 3, 3, 1, 1).unwrap();
    let mut ws = ConvWorkspace::default();
    let w = vec![1.0; g.weight_len()];
    let mut dw = vec![0.5; g.weight_len()];
    forward(&g, &[], &w, None, &mut []);
    backward_input(&g, &[], &w, &mut []);
    backward_weight(&g, &[], &[], &mut dw, &mut ws);
    assert!(dw.iter().all(|&v| v == 0.5));
    // The Winograd paths too.
    let g = ConvGeom::new(0, 32, 4, 4, 32, 3, 1, 1).unwrap();
    let w = vec![1.0; g.weight_len()];
    let mut dw = vec![0.5; g.weight_len()];
    backward_input(&g, &[], &w, &mut []);
    backward_weight(&g, &[], &[], &mut dw, &mut ws);
    winograd::backward_weight(&g, &[], &[], &mut dw, &mut ws);
    assert!(dw.iter().all(|&v| v == 0.5));
}

#[test]
#[should_panic(expected = "slice lengths")]
fn im2col_input_gradient_rejects_a_short_output() {
    let g = ConvGeom::new(1, 2, 4, 4, 3, 3, 1, 1).unwrap();
    let (dy, w) = (vec![0.0; g.out_img()], vec![0.0; g.weight_len()]);
    backward_input_im2col(&g, &dy, &w, &mut vec![0.0; g.in_img() - 1]);
}

#[test]
#[should_panic(expected = "slice lengths")]
fn im2col_weight_gradient_rejects_a_short_weight() {
    let g = ConvGeom::new(1, 2, 4, 4, 3, 3, 1, 1).unwrap();
    let (x, dy) = (vec![0.0; g.in_img()], vec![0.0; g.out_img()]);
    let mut dw = vec![0.0; g.weight_len() - 1];
    backward_weight_im2col(&g, &x, &dy, &mut dw, &mut ConvWorkspace::default());
}

#[test]
fn winograd_and_im2col_gradients_match_the_direct_convolution() {
    // 3×3 "same" shapes: odd heights and widths (edge tiles half outside), several image
    // groups with a short last one (16×16: 64 tiles, 4 images per group), a 1×1 plane, the
    // widest plane Winograd takes, and channel counts on both sides of a GEMM tile.
    let shapes: &[[usize; 5]] = &[
        // n, c_in, h, w, c_out
        [9, 3, 16, 16, 5],
        [3, 17, 7, 5, 33],
        [2, 4, 1, 1, 3],
        [1, 2, 3, 128, 3],
        [5, 32, 14, 14, 64],
        [70, 2, 2, 3, 2],
        // F(3×3, 4×4)'s weight gradient: edge tiles part outside, several groups and tasks.
        [11, 32, 13, 15, 16],
        [3, 64, 12, 12, 32],
    ];
    let mut seed = 21;
    for s in shapes {
        let g = ConvGeom::new(s[0], s[1], s[2], s[3], s[4], 3, 1, 1).unwrap();
        assert!(winograd::fits(&g), "{s:?}");
        let x = rand_vec(g.n * g.in_img(), &mut seed);
        let wt = rand_vec(g.weight_len(), &mut seed);
        let b = vec![0.0; g.c_out];
        let dy = rand_vec(g.n * g.out_img(), &mut seed);
        let r = reference(&g, &x, &wt, &b, &dy);
        let mut dx = vec![f32::NAN; g.n * g.in_img()];
        winograd::backward_input(&g, &dy, &wt, &mut dx);
        assert_close(&format!("{s:?} winograd dx"), &dx, &r.dx, &[]);
        let mut dx = vec![f32::NAN; g.n * g.in_img()];
        backward_input_im2col(&g, &dy, &wt, &mut dx);
        assert_close(&format!("{s:?} im2col dx"), &dx, &r.dx, &[]);
        // Weight gradients accumulate: both start from the same random values.
        let acc0 = rand_vec(g.weight_len(), &mut seed);
        let mut ws = ConvWorkspace::default();
        let mut dw = acc0.clone();
        winograd::backward_weight(&g, &x, &dy, &mut dw, &mut ws);
        assert_close(&format!("{s:?} winograd dw"), &dw, &r.dw, &acc0);
        let mut dw = acc0.clone();
        backward_weight_im2col(&g, &x, &dy, &mut dw, &mut ws);
        assert_close(&format!("{s:?} im2col dw"), &dw, &r.dw, &acc0);
    }
    // Only 3×3, stride 1, padding 1, at most MAX_WIDTH wide.
    let fits = |h, w, k, s, p| winograd::fits(&ConvGeom::new(1, 1, h, w, 1, k, s, p).unwrap());
    assert!(fits(8, winograd::MAX_WIDTH, 3, 1, 1));
    assert!(!fits(8, winograd::MAX_WIDTH + 1, 3, 1, 1));
    assert!(!fits(8, 8, 3, 2, 1) && !fits(8, 8, 3, 1, 0) && !fits(8, 8, 5, 1, 1));
    // Both channel counts ≥ MIN_CHANNELS; the weight gradient only where the AVX-512
    // transforms apply (never past 32 columns).
    let geom = |c_in, w, c_out| ConvGeom::new(1, c_in, 8, w, c_out, 3, 1, 1).unwrap();
    assert!(winograd::preferred(&geom(32, 14, 64)) && !winograd::preferred(&geom(31, 14, 64)));
    assert!(!winograd::preferred(&geom(64, 14, 3)));
    assert!(
        winograd::preferred(&geom(32, 64, 64))
            && !winograd::preferred_for_weight(&geom(32, 64, 64))
    );
}
