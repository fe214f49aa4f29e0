//! Direct 3×3, stride-1, padding-1 convolution forward of narrow planes (`W ≤ 14`) with
//! AVX-512, without im2col or GEMM packing, from f32 or straight from spike bits.
//!
//! Each image is first copied into zero-padded planes of 16 floats a row (spike
//! bits expand to `0`/scale in that copy, one masked move per row), so an image row is one
//! 16-lane vector and the tap `(ky, kx)` of output row `y` is the vector loaded at row
//! `y + ky`, offset `kx`. A register block holds 4 output channels × 5 rows (20 registers);
//! per input channel and `kx` it loads the 7 input rows it needs once, and every weight is a
//! broadcast operand of the FMAs that use it.
//!
//! Why: im2col copies nine taps of a 14-wide row into 288-long columns and the GEMM packs
//! them again. Criterion `conv2d/fwd` at `mnist-cnn`'s conv2 (32 → 64 channels, 14×14): 16.6
//! against 26.4 ms on 1 thread, 8.3 against 15.8 ms on 2; at 128 → 128 channels 31.3 against
//! 49.7 and 16.7 against 24.8 ms. On 8-wide planes half the lanes idle (ResNet-19's 8×8 layer:
//! twice im2col's time), hence [`preferred`]. Backward kernels built the same way (an input
//! gradient by the flipped weight, a weight gradient with lane sums) were not faster than the
//! Winograd ones with [`super::winograd`]'s unpacked GEMM (`docs/perf.md`, lever 41).
//!
//! Numerics: every output is one FMA chain over `(ci, kx, ky)`, so results differ from
//! im2col's in rounding only; the tests bound the difference by `1e-5 · Σ|products|`. Tasks
//! are fixed by the shape: the result does not depend on the thread count.

#[cfg(target_arch = "x86_64")]
mod avx512;

use super::sparse::SpikeBits;
use super::{groups_per_task, with_scratch, ConvGeom};
use rayon::prelude::*;

/// Floats per padded row: one 16-lane vector, so planes up to `ROW − 2` = 14 wide.
const ROW: usize = 16;
/// Output channels per register block (the multiple `C_out` must be).
const CO_BLOCK: usize = 4;
/// Output rows per register block of the forward kernel.
#[cfg(target_arch = "x86_64")]
const ROWS_BLOCK: usize = 5;
/// A conv input: f32, or spikes as bits (expanded to `0`/scale while padding).
#[derive(Clone, Copy, Debug)]
pub enum Input<'a> {
    /// `[N, C, H, W]` floats.
    Dense(&'a [f32]),
    /// The same tensor packed to bits.
    Spikes(&'a SpikeBits),
}

/// True if [`forward`] runs `g` on this CPU: a 3×3, stride-1, padding-1 conv of planes at
/// most 14 wide with `C_out` a multiple of 4, and AVX-512F.
pub fn applies(g: &ConvGeom) -> bool {
    let shape = g.k == 3
        && g.stride == 1
        && g.pad == 1
        && g.w + 2 <= ROW
        && g.c_out.is_multiple_of(CO_BLOCK);
    shape && has_avx512()
}

/// Narrowest plane [`preferred`] takes: at 12–14 wide a row fills 75–88 % of the lanes.
pub const MIN_PREFERRED_W: usize = 12;

/// True if the dense forward of `g` should run here rather than by im2col: [`applies`] and
/// the plane is at least [`MIN_PREFERRED_W`] wide (measured wins at 14 wide, a loss at 8).
pub fn preferred(g: &ConvGeom) -> bool {
    g.w >= MIN_PREFERRED_W && applies(g)
}

fn has_avx512() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Floats of slack that let [`aligned`] start the padded image on a cache line.
const ALIGN: usize = 16;

/// `buf` from its first 64-byte-aligned element on (at most [`ALIGN`] − 1 floats dropped),
/// so every padded row is one cache line and its loads at `kx` = 0 never split.
fn aligned(buf: &mut [f32]) -> &mut [f32] {
    let skip = buf.as_ptr().align_offset(64).min(ALIGN - 1);
    &mut buf[skip..]
}

/// Floats of one image's padded planes with the read slack after the last row.
fn padded_len(c: usize, h: usize) -> usize {
    c * (h + 2) * ROW + ROW
}

/// Pads image `n` of `x` (`c` channels of `h×w`) into `xp` (see the module docs).
fn pad_image(x: Input, n: usize, (c, h, w): (usize, usize, usize), xp: &mut [f32]) {
    let body = c * (h + 2) * ROW;
    xp[body..body + ROW].fill(0.0);
    #[cfg(target_arch = "x86_64")]
    match x {
        // SAFETY: `applies` checked AVX-512F and `w ≤ ROW − 2`; the callers' length checks
        // give image n's `c·h·w` floats (or `c` planes of words), and `xp` holds `body`.
        Input::Dense(d) => unsafe { avx512::pad_f32(&d[n * c * h * w..], (c, h, w), xp) },
        Input::Spikes(b) => {
            let wpp = b.plane_words();
            let words = &b.words()[n * c * wpp..(n + 1) * c * wpp];
            // SAFETY: as above.
            unsafe { avx512::pad_bits(words, wpp, (c, h, w), b.scale(), xp) }
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (x, n, w);
}

/// The weight in the kernel's order, `[C_out/4][C_in][kx][ky][4]`: the 12 weights one
/// `(ci, kx)` step broadcasts are adjacent. A pooled buffer: [`forward`] gives it back.
fn block_weights(weight: &[f32], c_out: usize, c_in: usize) -> Vec<f32> {
    let mut wk = crate::buffer_pool::overwritable(c_out * c_in * 9);
    for (i, v) in wk.iter_mut().enumerate() {
        let (j, rest) = (i % CO_BLOCK, i / CO_BLOCK);
        let (ky, rest) = (rest % 3, rest / 3);
        let (kx, rest) = (rest % 3, rest / 3);
        let (ic, cb) = (rest % c_in, rest / c_in);
        *v = weight[(((cb * CO_BLOCK + j) * c_in + ic) * 3 + ky) * 3 + kx];
    }
    wk
}

/// `y[n] = conv(x[n], wk) (+ bias)` for `c_in → c_out` channels, one task per group of
/// images.
fn conv_images(
    x: Input,
    (n, c_in, h, w): (usize, usize, usize, usize),
    wk: &[f32],
    c_out: usize,
    bias: Option<&[f32]>,
    y: &mut [f32],
) {
    let out_img = c_out * h * w;
    let xs = padded_len(c_in, h);
    let per = groups_per_task(n);
    y.par_chunks_mut(per * out_img)
        .enumerate()
        .for_each(|(t, yc)| {
            with_scratch(xs + ALIGN, 0, |s| {
                let xp = &mut aligned(&mut s.col)[..xs];
                for (k, yi) in yc.chunks_mut(out_img).enumerate() {
                    pad_image(x, t * per + k, (c_in, h, w), xp);
                    #[cfg(target_arch = "x86_64")]
                    // SAFETY: `applies` checked AVX-512F, `w ≤ 14` and `C_out % 4 == 0`; the
                    // lengths are asserted inside.
                    unsafe {
                        avx512::conv_image(xp, (c_in, h, w), wk, c_out, bias, yi)
                    };
                    #[cfg(not(target_arch = "x86_64"))]
                    let _ = (yi, wk, bias);
                }
            })
        });
}

fn check(g: &ConvGeom, x: Input, weight: usize, y: usize, what: &str) {
    let x_len = match x {
        Input::Dense(d) => d.len(),
        Input::Spikes(b) => {
            assert_eq!(
                b.geometry(),
                (g.n, g.c_in, g.h * g.w),
                "direct {what}: bits"
            );
            b.len()
        }
    };
    assert!(
        applies(g),
        "direct {what}: {g:?} is not a direct shape on this CPU"
    );
    super::check_lens(g, x_len, weight, y, what);
}

/// `y ← conv(x, weight) + bias` (see [`super::forward`]).
///
/// # Panics
/// If [`applies`] is false for `g`, or a length disagrees with `g`.
pub fn forward(g: &ConvGeom, x: Input, weight: &[f32], bias: Option<&[f32]>, y: &mut [f32]) {
    check(g, x, weight.len(), y.len(), "forward");
    assert!(
        bias.is_none_or(|b| b.len() == g.c_out),
        "direct forward: bias"
    );
    let wk = block_weights(weight, g.c_out, g.c_in);
    conv_images(x, (g.n, g.c_in, g.h, g.w), &wk, g.c_out, bias, y);
    crate::buffer_pool::give_back(wk);
}

#[cfg(test)]
#[path = "direct_tests.rs"]
mod tests;
