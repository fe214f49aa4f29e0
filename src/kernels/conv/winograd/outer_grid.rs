//! The channels-last grid the transposed transforms of [`super`] run on: its scratch
//! ([`Grid`]), the images it takes ([`Image`]), and the copy of an image into it
//! ([`to_channels_last`], 16×16 register transposes).

use crate::kernels::bn::GradAffine;
use crate::kernels::elementwise::prefetch;
use std::arch::x86_64::{
    __m512, _mm512_fmadd_ps, _mm512_maskz_loadu_ps, _mm512_maskz_mov_ps, _mm512_set1_ps,
    _mm512_shuffle_f32x4, _mm512_shuffle_ps, _mm512_storeu_ps, _mm512_sub_ps, _mm512_unpackhi_ps,
    _mm512_unpacklo_ps,
};

/// Floats of the channels-last buffer the transforms (of either tile size) need for `c`
/// channels of an `h × w` plane.
pub(in crate::kernels::conv::winograd) fn padded_len(c: usize, h: usize, w: usize) -> usize {
    (4 * h.div_ceil(4) + 2) * (4 * w.div_ceil(4) + 2) * c
}

/// Scratch for [`super::transform_t`]'s channels-last grid (at least [`padded_len`] floats) that
/// remembers which layout's zero border it holds: a run of images of one layout fills the
/// border once instead of per image (for `mnist-cnn`'s conv2, 40 % of each 18 × 18 grid, in
/// short `memset`s: 1.2 % of a training step's samples on a Zen 4).
pub(in crate::kernels::conv::winograd) struct Grid<'a> {
    pub(super) buf: &'a mut [f32],
    /// `(offset, tile, c, h, w)` of the layout whose border is zero, if any.
    border: Option<(usize, usize, usize, usize, usize)>,
}

impl<'a> Grid<'a> {
    /// A grid over `buf`, whose contents are not trusted.
    pub(in crate::kernels::conv::winograd) fn new(buf: &'a mut [f32]) -> Self {
        Grid { buf, border: None }
    }
}

/// Rows and columns of the channels-last grid for tiles of `tile` pixels: the tiles and a
/// border of one pixel past them on each side.
pub(super) fn grid(h: usize, w: usize, tile: usize) -> (usize, usize) {
    (tile * h.div_ceil(tile) + 2, tile * w.div_ceil(tile) + 2)
}

/// One image to transform: `[C, h, w]` floats, or the same as spike bits.
#[derive(Clone, Copy, Debug)]
pub(in crate::kernels::conv::winograd) enum Image<'a> {
    /// `C·h·w` floats.
    Dense(&'a [f32]),
    /// `C` planes of `plane_words` words, bit `i` of word `j` element `64·j + i` of its plane
    /// ([`crate::kernels::conv::sparse::SpikeBits`]'s layout), standing for `scale` or `+0.0`.
    Spikes {
        /// The image's words.
        words: &'a [u64],
        /// Words per plane.
        plane_words: usize,
        /// The value of a set bit.
        scale: f32,
    },
    /// `C·h·w` floats of `∂L/∂y` formed from a batch norm's output gradient and input as they
    /// are loaded: element `i` is `affines[i / (h·w)].apply(grad[i], input[i])`, in the same
    /// roundings (see [`crate::kernels::conv::OutputGrad`]).
    ThroughBn {
        /// The batch norm's output gradient.
        grad: &'a [f32],
        /// The batch norm's input.
        input: &'a [f32],
        /// One affine per channel.
        affines: &'a [GradAffine],
    },
}

/// The 16 vectors `r` transposed: lane `j` of result `i` is lane `i` of `r[j]`.
#[inline]
#[target_feature(enable = "avx512f")]
pub(super) fn transpose16(r: [__m512; 16]) -> [__m512; 16] {
    // Pairs of rows interleaved, then pairs of pairs, then 128-bit lanes twice.
    let t: [__m512; 16] = std::array::from_fn(|i| {
        let (a, b) = (r[i & !1], r[i | 1]);
        if i % 2 == 0 {
            _mm512_unpacklo_ps(a, b)
        } else {
            _mm512_unpackhi_ps(a, b)
        }
    });
    let u: [__m512; 16] = std::array::from_fn(|i| {
        // i = 4q + k: k = 0, 1 from t[4q] and t[4q + 2], k = 2, 3 from t[4q + 1], t[4q + 3].
        let (q, k) = (i / 4, i % 4);
        let (a, b) = (t[4 * q + k / 2], t[4 * q + k / 2 + 2]);
        if k % 2 == 0 {
            _mm512_shuffle_ps::<0x44>(a, b)
        } else {
            _mm512_shuffle_ps::<0xEE>(a, b)
        }
    });
    // u[4q + k] holds element k of rows 4q..4q + 4, per 128-bit lane.
    let v: [__m512; 16] = std::array::from_fn(|i| {
        // i = 8h + 4m + k: rows 8h..8h + 8, 128-bit lanes (0, 2) for m = 0 and (1, 3) for 1.
        let (h, m, k) = (i / 8, (i / 4) % 2, i % 4);
        let (a, b) = (u[8 * h + k], u[8 * h + 4 + k]);
        if m == 0 {
            _mm512_shuffle_f32x4::<0x88>(a, b)
        } else {
            _mm512_shuffle_f32x4::<0xDD>(a, b)
        }
    });
    std::array::from_fn(|i| {
        // Result i: the 128-bit lane i / 4 of every row, element i % 4.
        let (m, k) = ((i / 4) % 2, i % 4);
        let hi = i / 8;
        let (a, b) = (v[4 * m + k], v[8 + 4 * m + k]);
        if hi == 0 {
            _mm512_shuffle_f32x4::<0x88>(a, b)
        } else {
            _mm512_shuffle_f32x4::<0xDD>(a, b)
        }
    })
}

/// Copies the image `img` (`[c, h, w]`) into `grid_scratch` channels-last, pixel `(y, x)` at row
/// `y + off`, column `x + off` of a [`grid`] for `tile`-pixel tiles (`pw = tile·⌈w/tile⌉ + 2`
/// wide); everything else zero (left as it is if `grid` already holds this layout's
/// border). Returns `pw`.
///
/// # Safety
/// AVX-512F; `c` a multiple of 16; `img` holds `c·h·w` floats, `grid` [`padded_len`].
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn to_channels_last(
    img: Image,
    (c, h, w): (usize, usize, usize),
    off: usize,
    tile: usize,
    grid_scratch: &mut Grid,
) -> usize {
    let (ph, pw) = grid(h, w, tile);
    let layout = Some((off, tile, c, h, w));
    let padded = &mut grid_scratch.buf[..ph * pw * c];
    if grid_scratch.border != layout {
        // Zeros wherever the image does not land (the copy below overwrites the rest).
        for (y, row) in padded.chunks_exact_mut(pw * c).enumerate() {
            if (off..off + h).contains(&y) {
                row[..off * c].fill(0.0);
                row[(off + w) * c..].fill(0.0);
            } else {
                row.fill(0.0);
            }
        }
        grid_scratch.border = layout;
    }
    let (hw, pp) = (h * w, padded.as_mut_ptr());
    // The 16 planes of a block are read as 16 short streams at once, which the hardware
    // prefetchers do not follow: the next block is fetched while this one is copied.
    let fetch = |cv: usize| match img {
        Image::Dense(x) => prefetch(&x[cv * hw..(cv + 16) * hw]),
        Image::ThroughBn { grad, input, .. } => {
            prefetch(&grad[cv * hw..(cv + 16) * hw]);
            prefetch(&input[cv * hw..(cv + 16) * hw]);
        }
        Image::Spikes { .. } => {}
    };
    fetch(0);
    for cv in (0..c).step_by(16) {
        if cv + 16 < c {
            fetch(cv + 16);
        }
        for p0 in (0..hw).step_by(16) {
            let n = 16.min(hw - p0);
            let mask = ((1u32 << n) - 1) as u16;
            // SAFETY: row l reads img[(cv + l)·hw + p0..][..n] within `c·h·w` (or, for
            // bits, word (cv + l)·plane_words + p0 / 64 of the `c·plane_words`, or both
            // streams of a batch norm's and its affine cv + l < c, asserted by
            // `transform_t`); the stores write 16 floats at pixel (y + off, x + off) ≤ (h, w)
            // of the grid, within its ph·pw·c floats.
            unsafe {
                let rows = std::array::from_fn(|l| match img {
                    Image::Dense(x) => {
                        _mm512_maskz_loadu_ps(mask, x.as_ptr().add((cv + l) * hw + p0))
                    }
                    Image::Spikes {
                        words,
                        plane_words,
                        scale,
                    } => {
                        // p0 is a multiple of 16: its 16 bits sit in one word.
                        let word = *words.get_unchecked((cv + l) * plane_words + p0 / 64);
                        let set = (word >> (p0 % 64)) as u16 & mask;
                        _mm512_maskz_mov_ps(set, _mm512_set1_ps(scale))
                    }
                    Image::ThroughBn {
                        grad,
                        input,
                        affines,
                    } => {
                        // GradAffine::apply: dy·a + ((x − mean)·b + c), each step rounded
                        // once. Lanes past `n` are never stored.
                        let at = (cv + l) * hw + p0;
                        let k = *affines.get_unchecked(cv + l);
                        let dy = _mm512_maskz_loadu_ps(mask, grad.as_ptr().add(at));
                        let x = _mm512_maskz_loadu_ps(mask, input.as_ptr().add(at));
                        let xm = _mm512_sub_ps(x, _mm512_set1_ps(k.mean));
                        let rest = _mm512_fmadd_ps(xm, _mm512_set1_ps(k.b), _mm512_set1_ps(k.c));
                        _mm512_fmadd_ps(dy, _mm512_set1_ps(k.a), rest)
                    }
                });
                let cols = transpose16(rows);
                let (mut y, mut x) = (p0 / w, p0 % w);
                for v in &cols[..n] {
                    _mm512_storeu_ps(pp.add(((y + off) * pw + x + off) * c + cv), *v);
                    x += 1;
                    if x == w {
                        (y, x) = (y + 1, 0);
                    }
                }
            }
        }
    }
    pw
}
