//! A classifier head `y = x·Wᵀ` with few outputs (`o` ≤ [`MAX_OUTPUTS`]) and its weight
//! gradient, without a GEMM.
//!
//! Why: with `o` = 10 `matrixmultiply` packs the whole `[n, i]` input into panels on every
//! call and runs its 16-wide micro-kernel on 10 live columns, and the weight gradient (`o`
//! rows, so one GEMM task) ran transposed into a scratch buffer added back transposed.
//! Criterion `linear_head` (`mnist-cnn`'s `3136 → 10` at `n` = 256, 2 threads): forward
//! 0.20–0.25 ms against the GEMM's 0.33–0.45; the training step gained 10 % (interleaved
//! A/B, `docs/perf.md`). The input gradient `dy·W` runs with the weight gradient in
//! [`backward_in_place`], in 64-column strips so `W`'s slice stays in L1 and the strip's sums
//! in registers (a row-by-row kernel that streamed all of `W` from L2 per row was 2× slower
//! than the GEMM).
//!
//! Determinism: each output element is one sum in a fixed order (lanes over `k` in
//! `dots`, rows ascending in [`weight_grad`]), and tasks split only independent outputs, so
//! results do not depend on the thread count.

use rayon::prelude::*;
use wide::f32x16;

/// Widest output taken here; wider heads go through the GEMM.
pub const MAX_OUTPUTS: usize = 16;
const LANES: usize = 16;
/// Input rows per task of [`forward`].
const ROWS_PER_TASK: usize = 8;
/// Columns of `dW` per task of [`weight_grad`]: four vectors, so a task's `MAX_OUTPUTS × 64`
/// sums (4 KB) stay in L1 while the rows of `x` stream past.
const COLS_PER_TASK: usize = 4 * LANES;

fn load(s: &[f32]) -> f32x16 {
    f32x16::new(s[..LANES].try_into().expect("16 lanes"))
}

/// The dot products of `R` rows of `x` with `J` rows of `w` (all `i` long), `R·J`
/// independent FMA chains, so the adds overlap instead of waiting on one chain's latency.
/// Each product is summed the same way: 16 lanes, each over every 16th element in order,
/// reduced in a fixed order, then the tail — the same bits for any `R`, `J`.
fn dots<const R: usize, const J: usize>(x: [&[f32]; R], w: [&[f32]; J]) -> [[f32; J]; R] {
    let i = x.first().map_or(0, |r| r.len());
    let body = i - i % LANES;
    let mut acc = [[f32x16::splat(0.0); J]; R];
    for k in (0..body).step_by(LANES) {
        let wv: [f32x16; J] = std::array::from_fn(|j| load(&w[j][k..]));
        for (a, xr) in acc.iter_mut().zip(&x) {
            let xv = load(&xr[k..]);
            for (aj, wj) in a.iter_mut().zip(&wv) {
                *aj = xv.mul_add(*wj, *aj);
            }
        }
    }
    std::array::from_fn(|r| {
        std::array::from_fn(|j| {
            let tail: f32 = x[r][body..]
                .iter()
                .zip(&w[j][body..])
                .map(|(a, b)| a * b)
                .sum();
            acc[r][j].reduce_add() + tail
        })
    })
}

fn check(n: usize, i: usize, o: usize, x: usize, w: usize, y: usize) {
    assert!(
        (1..=MAX_OUTPUTS).contains(&o) && x == n * i && w == o * i && y == n * o,
        "narrow: {o} outputs (1..={MAX_OUTPUTS}) or slice lengths do not match [{n}, {i}]"
    );
}

/// `y[r, j] = beta·y[r, j] + Σ_k x[r, k]·w[j, k]` for `x: [n, i]`, `w: [o, i]`, `y: [n, o]`
/// (`beta` 0 ignores `y`'s old values, NaN included).
///
/// # Panics
/// If `o` is 0 or above [`MAX_OUTPUTS`], or a slice length disagrees with the sizes.
pub fn forward(x: &[f32], w: &[f32], y: &mut [f32], (n, i, o): (usize, usize, usize), beta: f32) {
    check(n, i, o, x.len(), w.len(), y.len());
    if n == 0 || i == 0 {
        y.iter_mut()
            .for_each(|v| *v = if beta == 0.0 { 0.0 } else { beta * *v });
        return;
    }
    y.par_chunks_mut(ROWS_PER_TASK * o)
        .zip(x.par_chunks(ROWS_PER_TASK * i))
        .for_each(|(yc, xc)| {
            let blocks = yc
                .chunks_mut(FORWARD_ROWS * o)
                .zip(xc.chunks(FORWARD_ROWS * i));
            for (yb, xb) in blocks {
                if yb.len() < FORWARD_ROWS * o {
                    // The last few rows, one at a time.
                    for (yr, xr) in yb.chunks_mut(o).zip(xb.chunks(i)) {
                        forward_rows::<1>([xr], [yr], w, i, beta);
                    }
                    continue;
                }
                let xs: [&[f32]; FORWARD_ROWS] = std::array::from_fn(|r| &xb[r * i..][..i]);
                let mut it = yb.chunks_mut(o);
                let ys: [&mut [f32]; FORWARD_ROWS] =
                    std::array::from_fn(|_| it.next().expect("FORWARD_ROWS rows"));
                forward_rows::<FORWARD_ROWS>(xs, ys, w, i, beta);
            }
        });
}

/// Rows of `x` taken together by [`forward`]: each block of `w`'s rows is read once for all
/// of them (`mnist-cnn`'s `w` is 125 KB, in L2). Four rows by four outputs (16 sums) with
/// their 4 + 4 vectors of `x` and `w` fit the 32 vector registers. Criterion
/// `linear_head/narrow_fwd` on a Zen 4, 2 threads: 0.23 ms with two rows, 0.165 with four.
const FORWARD_ROWS: usize = 4;

/// `y[r] = beta·y[r] + x[r]·wᵀ` for `R` rows; each output is [`dots`]' sum, the same bits
/// for any `R`.
fn forward_rows<const R: usize>(
    x: [&[f32]; R],
    mut y: [&mut [f32]; R],
    w: &[f32],
    i: usize,
    beta: f32,
) {
    let o = y[0].len();
    let put = |y: &mut f32, s: f32| *y = if beta == 0.0 { s } else { beta * *y + s };
    let w_row = |j: usize| &w[j * i..][..i];
    let mut j = 0;
    while j + 4 <= o {
        let s = dots::<R, 4>(x, std::array::from_fn(|q| w_row(j + q)));
        for (yr, sr) in y.iter_mut().zip(&s) {
            for q in 0..4 {
                put(&mut yr[j + q], sr[q]);
            }
        }
        j += 4;
    }
    for j in j..o {
        let s = dots::<R, 1>(x, [w_row(j)]);
        for (yr, sr) in y.iter_mut().zip(&s) {
            put(&mut yr[j], sr[0]);
        }
    }
}

/// `dw[j, k] += Σ_r dy[r, j]·x[r, k]` for `dy: [n, o]`, `x: [n, i]`, `dw: [o, i]`; each
/// element sums its `n` products in row order, then is added to `dw`.
///
/// # Panics
/// As [`forward`].
pub fn weight_grad(dy: &[f32], x: &[f32], dw: &mut [f32], (n, i, o): (usize, usize, usize)) {
    check(n, i, o, x.len(), dw.len(), dy.len());
    if n == 0 || i == 0 {
        return;
    }
    let tasks = i.div_ceil(COLS_PER_TASK);
    // Each task owns the columns [k0, k1) of every row of dW; the rows are `i` apart, so the
    // tasks return their sums and a second pass adds them (4 KB each, negligible).
    let sums: Vec<[[f32x16; 4]; MAX_OUTPUTS]> = (0..tasks)
        .into_par_iter()
        .map(|t| {
            let k0 = t * COLS_PER_TASK;
            let cols = (i - k0).min(COLS_PER_TASK);
            let mut acc = [[f32x16::splat(0.0); 4]; MAX_OUTPUTS];
            for (xr, gr) in x.chunks_exact(i).zip(dy.chunks_exact(o)) {
                let xv = load_segment(&xr[k0..k0 + cols]);
                for (a, &g) in acc.iter_mut().zip(gr) {
                    let g = f32x16::splat(g);
                    for (av, xs) in a.iter_mut().zip(&xv) {
                        *av = xs.mul_add(g, *av);
                    }
                }
            }
            acc
        })
        .collect();
    add_task_sums(&sums, dw, i);
}

/// A task's `COLS_PER_TASK` columns of one row of `x`, loaded as four vectors (zero past the
/// row's end).
fn load_segment(seg: &[f32]) -> [f32x16; 4] {
    std::array::from_fn(|v| match seg.get(v * LANES..) {
        Some(s) if s.len() >= LANES => load(s),
        Some(s) => {
            let mut pad = [0.0; LANES];
            pad[..s.len()].copy_from_slice(s);
            f32x16::new(pad)
        }
        None => f32x16::splat(0.0),
    })
}

/// The rows of `x` shared by [`backward_in_place`]'s tasks, each of which reads and writes
/// only its own columns of every row.
struct SharedRows {
    base: *mut f32,
    len: usize,
}

// SAFETY: `SharedRows` hands out only the segments `segment` is asked for; the tasks that
// share it ask for disjoint column ranges (see `backward_in_place`), so no two threads touch
// the same element.
unsafe impl Sync for SharedRows {}

impl SharedRows {
    /// `x[at..at + len]`.
    ///
    /// # Safety
    /// `at + len` ≤ the slice's length, and no other live reference overlaps the range.
    #[allow(clippy::mut_from_ref)]
    unsafe fn segment(&self, at: usize, len: usize) -> &mut [f32] {
        debug_assert!(at + len <= self.len);
        // SAFETY: in bounds and unaliased by the caller's contract; `base` came from a
        // `&mut [f32]` that outlives `self`.
        unsafe { std::slice::from_raw_parts_mut(self.base.add(at), len) }
    }
}

/// The head's backward in one pass over its cached input: `dw[j, k] += Σ_r dy[r, j]·x[r, k]`
/// (if `dw` is given; the same sums, in the same order, as [`weight_grad`], so the same
/// bits), then `x[r, k] ← Σ_j dy[r, j]·w[j, k]`, the input gradient, over the input it no
/// longer needs.
///
/// Why: in a training step `x` (`mnist-cnn`'s `[256, 3136]`, 3.2 MB) has left the caches by
/// the time the backward runs, and [`weight_grad`] then a GEMM for `dy·w` read it twice and
/// wrote it once; here each task takes a 64-column strip through both, so each element is
/// read once and written once, with the task's slice of `w` in registers.
///
/// # Panics
/// As [`forward`].
pub fn backward_in_place(
    dy: &[f32],
    w: &[f32],
    x: &mut [f32],
    dw: Option<&mut [f32]>,
    (n, i, o): (usize, usize, usize),
) {
    check(n, i, o, x.len(), w.len(), dy.len());
    if let Some(dw) = &dw {
        assert_eq!(
            dw.len(),
            o * i,
            "narrow: dw length does not match [{o}, {i}]"
        );
    }
    if n == 0 || i == 0 {
        return;
    }
    let want_dw = dw.is_some();
    let tasks = i.div_ceil(COLS_PER_TASK);
    let rows = SharedRows {
        base: x.as_mut_ptr(),
        len: x.len(),
    };
    let strips = Strips {
        dy,
        w,
        rows: &rows,
        i,
        want_dw,
    };
    let sums: Vec<[[f32x16; 4]; MAX_OUTPUTS]> = (0..tasks)
        .into_par_iter()
        .map(|t| {
            let k0 = t * COLS_PER_TASK;
            let cols = (i - k0).min(COLS_PER_TASK);
            if cols == COLS_PER_TASK {
                return strips.full_of(o, k0);
            }
            // The last, narrower task.
            let mut wv = [[f32x16::splat(0.0); 4]; MAX_OUTPUTS];
            for (j, wj) in wv.iter_mut().take(o).enumerate() {
                *wj = load_segment(&w[j * i + k0..j * i + k0 + cols]);
            }
            let mut acc = [[f32x16::splat(0.0); 4]; MAX_OUTPUTS];
            for (r, gr) in dy.chunks_exact(o).enumerate() {
                // SAFETY: task `t` alone owns columns [k0, k0 + cols) of every row, and
                // `r·i + k0 + cols` ≤ `n·i` = `x.len()` (checked above).
                let seg = unsafe { rows.segment(r * i + k0, cols) };
                let xv = load_segment(seg);
                if want_dw {
                    for (a, &g) in acc.iter_mut().zip(gr) {
                        let g = f32x16::splat(g);
                        for (av, xs) in a.iter_mut().zip(&xv) {
                            *av = xs.mul_add(g, *av);
                        }
                    }
                }
                let mut dx = [f32x16::splat(0.0); 4];
                for (wj, &g) in wv.iter().zip(gr) {
                    let g = f32x16::splat(g);
                    for (d, wl) in dx.iter_mut().zip(wj) {
                        *d = wl.mul_add(g, *d);
                    }
                }
                let dx = dx.map(|v| v.to_array());
                seg.copy_from_slice(&dx.as_flattened()[..cols]);
            }
            acc
        })
        .collect();
    if let Some(dw) = dw {
        add_task_sums(&sums, dw, i);
    }
}

/// The operands of [`backward_in_place`]'s full tasks.
struct Strips<'a> {
    dy: &'a [f32],
    w: &'a [f32],
    rows: &'a SharedRows,
    i: usize,
    want_dw: bool,
}

/// Vectors of a row [`Strips::full`] takes at a time: their `2·O` sums stay in registers
/// (all four, `4·O` = 40 for `mnist-cnn`, do not fit the 32 and spill).
const STRIP_VECTORS: usize = 2;

impl Strips<'_> {
    /// [`Strips::full`] for the run-time output count `o` (1..=[`MAX_OUTPUTS`]).
    fn full_of(&self, o: usize, k0: usize) -> [[f32x16; 4]; MAX_OUTPUTS] {
        macro_rules! by_outputs {
            ($($o:literal)*) => {
                match o {
                    $($o => self.full::<$o>(k0),)*
                    _ => unreachable!("check() bounds o by MAX_OUTPUTS"),
                }
            };
        }
        by_outputs!(1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16)
    }

    /// The full 64-column task at column `k0` with `O` outputs, `STRIP_VECTORS` vectors at a
    /// time. `O` is a constant so that the sums are registers: with `o` known only at run
    /// time they lived on the stack, a load and a store around every FMA, and the rows went
    /// through a stack copy and `memcpy`. Criterion `linear_head/narrow_bwd_in_place` on a
    /// Zen 4, 2 threads: 0.41 → 0.25 ms (all four vectors at once: 0.35; one: 0.27). Each sum
    /// still runs over the rows in order, so the bits are [`weight_grad`]'s.
    fn full<const O: usize>(&self, k0: usize) -> [[f32x16; 4]; MAX_OUTPUTS] {
        let Strips {
            dy,
            w,
            rows,
            i,
            want_dw,
        } = *self;
        const V: usize = STRIP_VECTORS;
        let mut out = [[f32x16::splat(0.0); 4]; MAX_OUTPUTS];
        for part in 0..COLS_PER_TASK / (V * LANES) {
            let c0 = k0 + part * V * LANES;
            let mut acc = [[f32x16::splat(0.0); V]; O];
            for (r, gr) in dy.chunks_exact(O).enumerate() {
                // SAFETY: the task alone owns columns [k0, k0 + 64) of every row, and
                // `r·i + c0 + V·16` ≤ `r·i + k0 + 64` ≤ `n·i` = `x.len()` (the caller takes only
                // full tasks here, and checked the lengths).
                let seg = unsafe { rows.segment(r * i + c0, V * LANES) };
                let xv: [f32x16; V] = std::array::from_fn(|v| load(&seg[v * LANES..]));
                let mut dx = [f32x16::splat(0.0); V];
                for (j, a) in acc.iter_mut().enumerate() {
                    let g = f32x16::splat(gr[j]);
                    if want_dw {
                        for (av, xs) in a.iter_mut().zip(&xv) {
                            *av = xs.mul_add(g, *av);
                        }
                    }
                    let wj = &w[j * i + c0..][..V * LANES];
                    for (v, d) in dx.iter_mut().enumerate() {
                        *d = load(&wj[v * LANES..]).mul_add(g, *d);
                    }
                }
                for (v, d) in dx.iter().enumerate() {
                    seg[v * LANES..][..LANES].copy_from_slice(&d.to_array());
                }
            }
            for (o, a) in out.iter_mut().zip(acc) {
                o[part * V..][..V].copy_from_slice(&a);
            }
        }
        out
    }
}

/// Adds the tasks' column sums (`[k0, k0 + 64)` of every row of `dW` each) into `dw`.
fn add_task_sums(sums: &[[[f32x16; 4]; MAX_OUTPUTS]], dw: &mut [f32], i: usize) {
    dw.par_chunks_mut(i).enumerate().for_each(|(j, row)| {
        for (t, acc) in sums.iter().enumerate() {
            let k0 = t * COLS_PER_TASK;
            let cols = (i - k0).min(COLS_PER_TASK);
            let lanes = acc[j].map(|v| v.to_array());
            for (d, s) in row[k0..k0 + cols].iter_mut().zip(lanes.as_flattened()) {
                *d += s;
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(len: usize, seed: u32) -> Vec<f32> {
        (0..len as u32)
            .map(|k| {
                let h = k
                    .wrapping_mul(2654435761)
                    .wrapping_add(seed.wrapping_mul(97));
                ((h >> 9) % 2001) as f32 / 1000.0 - 1.0
            })
            .collect()
    }

    /// f64 references of the two products.
    fn reference(
        x: &[f32],
        w: &[f32],
        dy: &[f32],
        (n, i, o): (usize, usize, usize),
    ) -> [Vec<f64>; 2] {
        let y = (0..n * o)
            .map(|e| {
                (0..i)
                    .map(|k| x[e / o * i + k] as f64 * w[e % o * i + k] as f64)
                    .sum()
            })
            .collect();
        let dw = (0..o * i)
            .map(|e| {
                (0..n)
                    .map(|r| dy[r * o + e / i] as f64 * x[r * i + e % i] as f64)
                    .sum()
            })
            .collect();
        [y, dw]
    }

    fn close(got: &[f32], want: &[f64], terms: usize, what: &str) {
        for (k, (&g, &w)) in got.iter().zip(want).enumerate() {
            // Products of values in [-1, 1]: the rounding of a sum of `terms` of them.
            let tol = 1e-6 * terms as f64;
            assert!((g as f64 - w).abs() <= tol, "{what}[{k}]: {g} vs {w}");
        }
    }

    /// `(n, i, o)`: widths around the 16 lanes and the 64-column tasks, row counts around the
    /// forward's task size.
    const SHAPES: &[(usize, usize, usize)] = &[
        (1, 1, 1),
        (3, 15, 2),
        (9, 16, 10),
        (17, 63, 16),
        (8, 65, 7),
        (20, 200, 10),
        (5, 300, 9),
        (6, 130, 16),
        (3, 64, 1),
    ];

    /// `f` on a pool of 1 thread, then of 2 and 3: each result must equal the first.
    fn same_on_any_thread_count<R: PartialEq + Send>(f: impl Fn() -> R + Sync) {
        let run = |threads: usize| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap()
                .install(&f)
        };
        let one = run(1);
        for threads in [2, 3] {
            assert!(run(threads) == one, "{threads} threads");
        }
    }

    #[test]
    fn both_products_match_f64_references() {
        for &(n, i, o) in SHAPES {
            let (x, w, dy) = (data(n * i, 1), data(o * i, 2), data(n * o, 3));
            let [y_ref, dw_ref] = reference(&x, &w, &dy, (n, i, o));
            let mut y = vec![f32::NAN; n * o];
            forward(&x, &w, &mut y, (n, i, o), 0.0);
            close(&y, &y_ref, i, "y");
            // beta = 1 adds onto a bias already in y.
            let mut yb = vec![0.5; n * o];
            forward(&x, &w, &mut yb, (n, i, o), 1.0);
            let shifted: Vec<f64> = y_ref.iter().map(|v| v + 0.5).collect();
            close(&yb, &shifted, i, "y + bias");
            let mut dw = vec![1.0; o * i];
            weight_grad(&dy, &x, &mut dw, (n, i, o));
            let accumulated: Vec<f64> = dw_ref.iter().map(|v| v + 1.0).collect();
            close(&dw, &accumulated, n, "dw");
        }
    }

    #[test]
    fn results_do_not_depend_on_the_thread_count() {
        let (n, i, o) = (37, 3136, 10);
        let (x, w, dy) = (data(n * i, 4), data(o * i, 5), data(n * o, 6));
        same_on_any_thread_count(|| {
            let (mut y, mut dw) = (vec![0.0; n * o], vec![0.0; o * i]);
            forward(&x, &w, &mut y, (n, i, o), 0.0);
            weight_grad(&dy, &x, &mut dw, (n, i, o));
            (y, dw)
        });
    }

    /// f64 reference of the input gradient `dy·w`.
    fn input_grad_reference(dy: &[f32], w: &[f32], (n, i, o): (usize, usize, usize)) -> Vec<f64> {
        (0..n * i)
            .map(|e| {
                (0..o)
                    .map(|j| dy[e / i * o + j] as f64 * w[j * i + e % i] as f64)
                    .sum()
            })
            .collect()
    }

    #[test]
    fn the_in_place_backward_matches_references_and_the_separate_weight_gradient() {
        for &(n, i, o) in SHAPES {
            let (x, w, dy) = (data(n * i, 7), data(o * i, 8), data(n * o, 9));
            let mut dw_separate = vec![1.0; o * i];
            weight_grad(&dy, &x, &mut dw_separate, (n, i, o));
            let mut dx = x.clone();
            let mut dw = vec![1.0; o * i];
            backward_in_place(&dy, &w, &mut dx, Some(&mut dw), (n, i, o));
            assert!(dw == dw_separate, "dw bits differ at {:?}", (n, i, o));
            close(&dx, &input_grad_reference(&dy, &w, (n, i, o)), o, "dx");
            // Without a weight gradient the input gradient is the same.
            let mut dx_only = x.clone();
            backward_in_place(&dy, &w, &mut dx_only, None, (n, i, o));
            assert!(dx_only == dx, "dx without dw differs at {:?}", (n, i, o));
        }
    }

    #[test]
    fn the_in_place_backward_does_not_depend_on_the_thread_count() {
        let (n, i, o) = (37, 3136, 10);
        let (x, w, dy) = (data(n * i, 10), data(o * i, 11), data(n * o, 12));
        same_on_any_thread_count(|| {
            let (mut dx, mut dw) = (x.clone(), vec![0.0; o * i]);
            backward_in_place(&dy, &w, &mut dx, Some(&mut dw), (n, i, o));
            (dx, dw)
        });
    }

    #[test]
    #[should_panic(expected = "narrow")]
    fn a_wide_head_is_refused() {
        let mut y = vec![0.0; 17];
        forward(&[0.0; 1], &[0.0; 17], &mut y, (1, 1, 17), 0.0);
    }
}
