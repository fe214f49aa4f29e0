//! The Winograd weight gradient's 16 products `D_ξ += U_ξ·V_ξᵀ` without packing: both
//! transforms write their output transposed (`Vᵀ_ξ` and `Uᵀ_ξ`, a row of channels per tile),
//! so each product is a sum of outer products that a broadcast kernel reads in place.
//!
//! With a lane per tile (the transforms of [`super`]) both operands of the product run along
//! the tiles (`K`), so `matrixmultiply` had to transpose both while packing them, element by
//! element: packing was ≈ 6 % of a `mnist-cnn` training step, the GEMM micro-kernel 10 %
//! (`perf`, see `docs/perf.md`). Here:
//!
//! - each image of `X` and of `dY` is copied once into a zero-bordered channels-last grid
//!   (16×16 register transposes: 16 channels × 16 pixels at a time), and the tile transforms
//!   run on 16-channel vectors, tile by tile, writing a row of channels contiguously (the
//!   same additions, in the same order, as the portable transforms: the same bits);
//! - the kernel keeps a 12-row × 32-channel block of `D_ξ` in 24 registers and, per tile,
//!   loads two channel vectors of `Vᵀ_ξ` and broadcasts twelve contiguous values of `Uᵀ_ξ`.
//!
//! Numerics: each element of `D` is one FMA chain over the tiles in order, so the result
//! differs from the GEMM's in rounding only (the Winograd tests bound it).

#[path = "outer_grid.rs"]
mod channels_last;
#[path = "outer_tiles4.rs"]
mod tiles4;
use channels_last::to_channels_last;
pub(super) use channels_last::{padded_len, Grid, Image};
use std::arch::x86_64::{
    __m512, _mm512_add_ps, _mm512_fmadd_ps, _mm512_loadu_ps, _mm512_mul_ps, _mm512_set1_ps,
    _mm512_setzero_ps, _mm512_storeu_ps, _mm512_sub_ps,
};

/// Rows of `D` (output channels) per register block.
const ROWS: usize = 12;
/// Channels per register block: two 16-lane vectors.
const CHANNELS: usize = 32;

/// True if this module takes a weight gradient with `c_in` input and `c_out` output channels
/// on this CPU: AVX-512F, `C_in` a multiple of 32 and `C_out` of 16.
pub(super) fn applies(c_in: usize, c_out: usize) -> bool {
    c_in.is_multiple_of(CHANNELS)
        && c_out.is_multiple_of(16)
        && c_in > 0
        && c_out > 0
        && std::arch::is_x86_feature_detected!("avx512f")
}

/// The transposed transforms of one image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Transform {
    /// F(2×2)'s `Bᵀ·d·B` of the 4×4 windows of the input `X` (rows and columns from
    /// `2ty − 1`, `2tx − 1`), as [`super::transform_input`].
    Input,
    /// `G·y·Gᵀ` of the 2×2 tiles of `dY`, as [`super::weight::transform_grad`].
    Grad,
    /// F(4×4)'s `Bᵀ·d·B` of the 6×6 windows of `X` (from `4ty − 1`, `4tx − 1`): 36 values.
    Input4,
    /// `A·y·Aᵀ` of the 4×4 tiles of `dY` (F(4×4)'s `A`): 36 values.
    Grad4,
}

impl Transform {
    /// Output pixels per tile side.
    fn tile(self) -> usize {
        match self {
            Transform::Input | Transform::Grad => 2,
            Transform::Input4 | Transform::Grad4 => 4,
        }
    }

    /// Transformed values per tile.
    fn values(self) -> usize {
        (self.tile() + 2) * (self.tile() + 2)
    }
}

/// `out[ξ·ld + (col0 + tile)·C + c] = transform(img[c])[ξ][tile]` for every channel `c` of the
/// image `img` (`[C, h, w]`): the portable transform of every plane, transposed (the same
/// bits). `padded` is the scratch grid.
///
/// # Panics
/// If `C` is not a multiple of 16 or AVX-512F is missing, or a slice is too short.
#[allow(clippy::too_many_arguments)]
pub(super) fn transform_t(
    kind: Transform,
    img: Image,
    (c, h, w): (usize, usize, usize),
    padded: &mut Grid,
    out: &mut [f32],
    ld: usize,
    col0: usize,
) {
    assert!(
        c.is_multiple_of(16) && c > 0 && std::arch::is_x86_feature_detected!("avx512f"),
        "outer: {c} channels not taken here"
    );
    let tiles = h.div_ceil(kind.tile()) * w.div_ceil(kind.tile());
    assert!(
        match img {
            Image::Dense(x) => x.len() >= c * h * w,
            Image::Spikes {
                words, plane_words, ..
            } => plane_words >= (h * w).div_ceil(64) && words.len() >= c * plane_words,
            Image::ThroughBn {
                grad,
                input,
                affines,
            } => grad.len() >= c * h * w && input.len() >= c * h * w && affines.len() >= c,
        } && padded.buf.len() >= padded_len(c, h, w)
            && ld >= (col0 + tiles) * c
            && out.len() >= (kind.values() - 1) * ld + (col0 + tiles) * c,
        "outer transform_t: slices too short for {c}x{h}x{w}"
    );
    // SAFETY: AVX-512F was detected; the lengths are asserted above and the kernels read
    // and write within them (see their comments).
    unsafe {
        let off = match kind {
            Transform::Input | Transform::Input4 => 1,
            Transform::Grad | Transform::Grad4 => 0,
        };
        let pw = to_channels_last(img, (c, h, w), off, kind.tile(), padded);
        let padded = &*padded.buf;
        let dims = (c, h, w);
        match kind {
            Transform::Input => transform_tiles::<true>(padded, dims, pw, out, ld, col0),
            Transform::Grad => transform_tiles::<false>(padded, dims, pw, out, ld, col0),
            Transform::Input4 => tiles4::transform::<true>(padded, dims, pw, out, ld, col0),
            Transform::Grad4 => tiles4::transform::<false>(padded, dims, pw, out, ld, col0),
        }
    }
}

/// The transform of every tile of the channels-last grid (see [`transform_t`]): with `INPUT`,
/// F(2×2)'s `Bᵀ·d·B` of the 4×4 windows (`padded` filled with `off = 1`), else `G·y·Gᵀ` of
/// the 2×2 tiles (`off = 0`).
///
/// # Safety
/// As [`transform_t`] asserts; `padded` filled by [`to_channels_last`].
#[target_feature(enable = "avx512f")]
unsafe fn transform_tiles<const INPUT: bool>(
    padded: &[f32],
    (c, h, w): (usize, usize, usize),
    pw: usize,
    out: &mut [f32],
    ld: usize,
    col0: usize,
) {
    let (th, tw) = (h.div_ceil(2), w.div_ceil(2));
    let (pp, op) = (padded.as_ptr(), out.as_mut_ptr());
    let half = _mm512_set1_ps(0.5);
    for ty in 0..th {
        for tx in 0..tw {
            let col = col0 + ty * tw + tx;
            for cv in (0..c).step_by(16) {
                // SAFETY: a window's pixels (2ty + r, 2tx + s), r, s < 4 (2 for the gradient's
                // tiles), are rows ≤ 2th + 1 and columns ≤ 2tw + 1 of the grid; each store
                // writes 16 floats at ξ·ld + col·c + cv, below 15·ld + (col0 + th·tw)·c
                // (asserted).
                unsafe {
                    let at = |r: usize, s: usize| {
                        _mm512_loadu_ps(pp.add(((2 * ty + r) * pw + 2 * tx + s) * c + cv))
                    };
                    let store = |xi: usize, v: __m512| {
                        _mm512_storeu_ps(op.add(xi * ld + col * c + cv), v);
                    };
                    if INPUT {
                        // Bᵀ on the rows of the window (r0 − r2, r1 + r2, r2 − r1, r1 − r3),
                        // then on its columns: the order of `super::transform_input`.
                        let d: [[__m512; 4]; 4] =
                            std::array::from_fn(|r| [0, 1, 2, 3].map(|s| at(r, s)));
                        let t = [
                            [0, 1, 2, 3].map(|s| _mm512_sub_ps(d[0][s], d[2][s])),
                            [0, 1, 2, 3].map(|s| _mm512_add_ps(d[1][s], d[2][s])),
                            [0, 1, 2, 3].map(|s| _mm512_sub_ps(d[2][s], d[1][s])),
                            [0, 1, 2, 3].map(|s| _mm512_sub_ps(d[1][s], d[3][s])),
                        ];
                        for (a, r) in t.iter().enumerate() {
                            store(4 * a, _mm512_sub_ps(r[0], r[2]));
                            store(4 * a + 1, _mm512_add_ps(r[1], r[2]));
                            store(4 * a + 2, _mm512_sub_ps(r[2], r[1]));
                            store(4 * a + 3, _mm512_sub_ps(r[1], r[3]));
                        }
                    } else {
                        // G on the rows (y0, (y0 + y1)/2, (y0 − y1)/2, y1), then on the
                        // columns: the order of `super::weight::transform_grad`.
                        let (y0, y1) = ([at(0, 0), at(0, 1)], [at(1, 0), at(1, 1)]);
                        let comb = [
                            y0,
                            [0, 1].map(|s| _mm512_mul_ps(half, _mm512_add_ps(y0[s], y1[s]))),
                            [0, 1].map(|s| _mm512_mul_ps(half, _mm512_sub_ps(y0[s], y1[s]))),
                            y1,
                        ];
                        for (i, [e, o]) in comb.into_iter().enumerate() {
                            store(4 * i, e);
                            store(4 * i + 1, _mm512_mul_ps(half, _mm512_add_ps(e, o)));
                            store(4 * i + 2, _mm512_mul_ps(half, _mm512_sub_ps(e, o)));
                            store(4 * i + 3, o);
                        }
                    }
                }
            }
        }
    }
}

/// `d[o·C_in + c] += Σ_t ut[t·C_out + o] · vt[t·C_in + c]` for `o < C_out`, `c < C_in`,
/// `t < cols`: one `D_ξ += U_ξ·V_ξᵀ` from the transposed transforms.
///
/// # Panics
/// If [`applies`] is false, or a slice is too short for its layout.
pub(super) fn gemm(
    (c_out, c_in, cols): (usize, usize, usize),
    ut: &[f32],
    vt: &[f32],
    d: &mut [f32],
) {
    assert!(applies(c_in, c_out), "outer: {c_out}x{c_in} not taken here");
    assert!(
        ut.len() >= cols * c_out && vt.len() >= cols * c_in && d.len() >= c_out * c_in,
        "outer gemm: slices too short for {c_out}x{c_in} over {cols}"
    );
    let mut o = 0;
    while o < c_out {
        let rows = ROWS.min(c_out - o);
        for c in (0..c_in).step_by(CHANNELS) {
            let (ut, vt, d) = (&ut[o..], &vt[c..], &mut d[o * c_in + c..]);
            let ld = (c_out, c_in);
            // SAFETY: AVX-512F (`applies`); the block reads columns o..o + rows of `ut`'s
            // and channels c..c + 32 of `vt`'s `cols` rows, and writes rows o..o + rows,
            // channels c..c + 32 of `d`: all within the asserted lengths.
            unsafe {
                match rows {
                    ROWS => block::<ROWS>(ut, vt, ld, cols, d),
                    1 => block::<1>(ut, vt, ld, cols, d),
                    2 => block::<2>(ut, vt, ld, cols, d),
                    3 => block::<3>(ut, vt, ld, cols, d),
                    4 => block::<4>(ut, vt, ld, cols, d),
                    5 => block::<5>(ut, vt, ld, cols, d),
                    6 => block::<6>(ut, vt, ld, cols, d),
                    7 => block::<7>(ut, vt, ld, cols, d),
                    8 => block::<8>(ut, vt, ld, cols, d),
                    9 => block::<9>(ut, vt, ld, cols, d),
                    10 => block::<10>(ut, vt, ld, cols, d),
                    _ => block::<11>(ut, vt, ld, cols, d),
                }
            }
        }
        o += rows;
    }
}

/// `R` rows × 32 channels of `D` in registers over all `cols` tiles.
///
/// # Safety
/// AVX-512F; `ut` holds `cols` rows `C_out` apart of at least `R` floats, `vt` `cols` rows
/// `C_in` apart of at least 32, `d` `R` rows `C_in` apart of at least 32
/// (`(C_out, C_in) = ld`).
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn block<const R: usize>(
    ut: &[f32],
    vt: &[f32],
    (ldu, ld): (usize, usize),
    cols: usize,
    d: &mut [f32],
) {
    let (up, vp, dp) = (ut.as_ptr(), vt.as_ptr(), d.as_mut_ptr());
    // SAFETY: every pointer stays within the caller's contract above.
    unsafe {
        let mut acc = [[_mm512_setzero_ps(); 2]; R];
        for (r, a) in acc.iter_mut().enumerate() {
            a[0] = _mm512_loadu_ps(dp.add(r * ld));
            a[1] = _mm512_loadu_ps(dp.add(r * ld + 16));
        }
        for t in 0..cols {
            let v0 = _mm512_loadu_ps(vp.add(t * ld));
            let v1 = _mm512_loadu_ps(vp.add(t * ld + 16));
            for (r, a) in acc.iter_mut().enumerate() {
                let b = _mm512_set1_ps(*up.add(t * ldu + r));
                a[0] = _mm512_fmadd_ps(b, v0, a[0]);
                a[1] = _mm512_fmadd_ps(b, v1, a[1]);
            }
        }
        for (r, a) in acc.iter().enumerate() {
            _mm512_storeu_ps(dp.add(r * ld), a[0]);
            _mm512_storeu_ps(dp.add(r * ld + 16), a[1]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::channels_last::transpose16;
    use super::*;
    use crate::kernels::conv::tests::rand_vec as data;

    fn avx512() -> bool {
        let yes = std::arch::is_x86_feature_detected!("avx512f");
        if !yes {
            eprintln!("no AVX-512F: outer-product weight gradient not tested");
        }
        yes
    }

    #[test]
    fn transpose16_transposes() {
        if !avx512() {
            return;
        }
        let m: Vec<f32> = (0..256).map(|i| i as f32).collect();
        let mut out = [0.0f32; 256];
        // SAFETY: AVX-512F detected; 16 loads and stores of 16 floats within `m` and `out`.
        unsafe {
            let rows = std::array::from_fn(|j| _mm512_loadu_ps(m.as_ptr().add(16 * j)));
            for (i, v) in transpose16(rows).into_iter().enumerate() {
                _mm512_storeu_ps(out.as_mut_ptr().add(16 * i), v);
            }
        }
        for i in 0..16 {
            for j in 0..16 {
                assert_eq!(out[16 * i + j], m[16 * j + i], "[{i}][{j}]");
            }
        }
    }

    /// Both transposed transforms write the portable transforms' bits at the transposed
    /// places, and nothing past their tiles (NaN sentinels around them survive), from a
    /// NaN-filled channels-last scratch.
    #[test]
    fn transposed_transforms_give_the_portable_bits_transposed() {
        if !avx512() {
            return;
        }
        let mut seed = 5u64;
        // Odd sizes (edge tiles partly outside), planes shorter than and not a multiple of a
        // 16-pixel block, 1×1, the widest AVX-512 plane, two channel blocks.
        let shapes: [(usize, usize, usize, usize); 5] = [
            (32, 14, 14, 3),
            (16, 5, 7, 0),
            (32, 1, 1, 2),
            (48, 9, 16, 1),
            (16, 3, 32, 0),
        ];
        for (c, h, w, col0) in shapes {
            let tiles = h.div_ceil(2) * w.div_ceil(2);
            let img = data(c * h * w, &mut seed);
            let ld = (col0 + tiles + 1) * c + 7;
            for kind in [Transform::Input, Transform::Grad] {
                let mut out = vec![f32::NAN; 16 * ld];
                let mut padded = vec![f32::NAN; padded_len(c, h, w)];
                transform_t(
                    kind,
                    Image::Dense(&img),
                    (c, h, w),
                    &mut Grid::new(&mut padded),
                    &mut out,
                    ld,
                    col0,
                );
                let pld = tiles + 3;
                for ch in 0..c {
                    let plane = &img[ch * h * w..][..h * w];
                    let mut v = vec![0.0; 16 * pld];
                    match kind {
                        Transform::Input => super::super::transform_input(plane, h, w, &mut v, pld),
                        Transform::Grad => {
                            super::super::weight::transform_grad(plane, h, w, &mut v, pld)
                        }
                        _ => unreachable!("F(2×2)'s transforms only"),
                    }
                    for xi in 0..16 {
                        for t in 0..tiles {
                            let got = out[xi * ld + (col0 + t) * c + ch];
                            let want = v[xi * pld + t];
                            assert_eq!(
                                got.to_bits(),
                                want.to_bits(),
                                "{kind:?} {c}x{h}x{w} c{ch} ξ{xi} t{t}: {got} vs {want}"
                            );
                        }
                    }
                }
                for xi in 0..16 {
                    let row = &out[xi * ld..][..ld];
                    let mut outside = row[..col0 * c].iter().chain(&row[(col0 + tiles) * c..]);
                    assert!(
                        outside.all(|v| v.is_nan()),
                        "{kind:?} {c}x{h}x{w}: wrote past its tiles"
                    );
                }
            }
        }
    }

    /// The block kernel against a plain triple loop, for a full block and row tails, several
    /// channel blocks and tile counts (1 to 37), accumulating onto nonzero `D`.
    #[test]
    fn spike_bits_transform_like_their_floats() {
        if !avx512() {
            return;
        }
        use crate::kernels::conv::sparse::SpikeBits;
        // Planes of one word and less, exactly 64, several words with a partial last one.
        for (c, h, w) in [(16, 14, 14), (32, 3, 5), (16, 8, 8), (32, 9, 16)] {
            let mut seed = 11u32;
            let img: Vec<f32> = (0..c * h * w)
                .map(|_| {
                    seed = seed.wrapping_mul(1664525).wrapping_add(1013904223);
                    if seed >> 30 == 0 {
                        0.75
                    } else {
                        0.0
                    }
                })
                .collect();
            let bits = SpikeBits::from_f32(&img, 1, c, h * w, 0.75);
            let tiles = h.div_ceil(2) * w.div_ceil(2);
            let ld = (1 + tiles) * c + 3;
            let run = |image: Image| {
                let mut out = vec![f32::NAN; 16 * ld];
                let mut padded = vec![f32::NAN; padded_len(c, h, w)];
                transform_t(
                    Transform::Input,
                    image,
                    (c, h, w),
                    &mut Grid::new(&mut padded),
                    &mut out,
                    ld,
                    1,
                );
                out
            };
            let dense = run(Image::Dense(&img));
            let spikes = run(Image::Spikes {
                words: bits.words(),
                plane_words: bits.plane_words(),
                scale: 0.75,
            });
            let same = dense
                .iter()
                .zip(&spikes)
                .all(|(a, b)| a.to_bits() == b.to_bits());
            assert!(same, "{c}x{h}x{w}");
        }
    }

    #[test]
    fn gemm_matches_a_plain_product() {
        if !avx512() {
            return;
        }
        let mut seed = 9u64;
        let shapes: [(usize, usize, usize); 5] = [
            (64, 32, 37),
            (16, 64, 1),
            (32, 32, 20),
            (48, 96, 16),
            (16, 32, 3),
        ];
        for (c_out, c_in, cols) in shapes {
            let ut = data(cols * c_out, &mut seed);
            let vt = data(cols * c_in, &mut seed);
            let d0 = data(c_out * c_in, &mut seed);
            let mut d = d0.clone();
            gemm((c_out, c_in, cols), &ut, &vt, &mut d);
            for o in 0..c_out {
                for c in 0..c_in {
                    let start = d0[o * c_in + c] as f64;
                    let (mut want, mut mag) = (start, start.abs());
                    for t in 0..cols {
                        let p = ut[t * c_out + o] as f64 * vt[t * c_in + c] as f64;
                        want += p;
                        mag += p.abs();
                    }
                    let got = d[o * c_in + c] as f64;
                    assert!(
                        (got - want).abs() <= 1e-6 * mag + 1e-7,
                        "{c_out}x{c_in}x{cols} [{o}][{c}]: {got} vs {want}"
                    );
                }
            }
        }
    }
}
