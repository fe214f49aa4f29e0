//! F(4×4)'s transposed tile transforms for the weight gradient F(3×3, 4×4)
//! ([`super::super::weight4`]): on the channels-last grid of [`super::channels_last::to_channels_last`],
//! 16 channels a vector, `Bᵀ·d·B` of each 6×6 input window (F(4×4, 3×3)'s `Bᵀ`,
//! [`super::super::f43::bt`]) or `A·y·Aᵀ` of each 4×4 gradient tile (its `A`, [`a_col`]),
//! written as a row of channels per tile for each of the 36 products.

use super::super::f43::{bt, Lanes};
use std::arch::x86_64::{_mm512_loadu_ps, _mm512_storeu_ps};
use wide::f32x16;

/// `A·y`: F(4×4, 3×3)'s `Aᵀ` transposed applied to four gradient values (one tile row or
/// column), six values out.
#[inline(always)]
fn a_col<T: Lanes>(y: [T; 4]) -> [T; 6] {
    let [y0, y1, y2, y3] = y;
    let (even, odd) = (y0 + y2, y1 + y3);
    let (even4, odd4) = (
        y0 + T::splat(4.0) * y2,
        T::splat(2.0) * y1 + T::splat(8.0) * y3,
    );
    [y0, even + odd, even - odd, even4 + odd4, even4 - odd4, y3]
}

/// With `INPUT`, `Bᵀ·d·B` of every tile's 6×6 window (grid filled with `off = 1`), else
/// `A·y·Aᵀ` of every 4×4 tile (`off = 0`): value `ξ = 6a + b` of tile `col` (from `col0`, tiles
/// in row order) and channel `ch` goes to `out[ξ·ld + col·c + ch]`. The row transform runs
/// down each window column first, then along each transformed row.
///
/// # Safety
/// AVX-512F; `padded` is the [`super::channels_last::grid`] for 4-pixel tiles of `c` channels (a multiple of
/// 16) of an `h × w` plane, `pw` columns wide; `out` holds `35·ld + (col0 + ⌈h/4⌉·⌈w/4⌉)·c`
/// floats.
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn transform<const INPUT: bool>(
    padded: &[f32],
    (c, h, w): (usize, usize, usize),
    pw: usize,
    out: &mut [f32],
    ld: usize,
    col0: usize,
) {
    let (th, tw) = (h.div_ceil(4), w.div_ceil(4));
    let (pp, op) = (padded.as_ptr(), out.as_mut_ptr());
    let zero = f32x16::splat(0.0);
    for ty in 0..th {
        for tx in 0..tw {
            let col = col0 + ty * tw + tx;
            for cv in (0..c).step_by(16) {
                // SAFETY: a window's pixels (4ty + r, 4tx + s), r, s < 6 (4 for the gradient's
                // tiles), are rows ≤ 4th + 1 and columns ≤ 4tw + 1 of the grid; each store
                // writes 16 floats at ξ·ld + col·c + cv, below 35·ld + (col0 + th·tw)·c.
                unsafe {
                    let at = |r: usize, s: usize| -> f32x16 {
                        _mm512_loadu_ps(pp.add(((4 * ty + r) * pw + 4 * tx + s) * c + cv)).into()
                    };
                    // rows[a][s]: the row transform's value a of window column s.
                    let mut rows = [[zero; 6]; 6];
                    let n = if INPUT { 6 } else { 4 };
                    for s in 0..n {
                        let column = if INPUT {
                            bt([at(0, s), at(1, s), at(2, s), at(3, s), at(4, s), at(5, s)])
                        } else {
                            a_col([at(0, s), at(1, s), at(2, s), at(3, s)])
                        };
                        for (row, v) in rows.iter_mut().zip(column) {
                            row[s] = v;
                        }
                    }
                    for (a, row) in rows.iter().enumerate() {
                        let values = if INPUT {
                            bt(*row)
                        } else {
                            a_col([row[0], row[1], row[2], row[3]])
                        };
                        for (b, v) in values.into_iter().enumerate() {
                            _mm512_storeu_ps(op.add((6 * a + b) * ld + col * c + cv), v.into());
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{padded_len, transform_t, Grid, Image, Transform};
    use super::*;
    use crate::kernels::conv::tests::rand_vec as data;

    /// The vector transforms against [`bt`] and [`a_col`] on single floats in the same order
    /// (so the same bits), reading the plane with zeros outside: odd sizes, edge tiles mostly
    /// outside, two channel blocks, an offset first column; nothing written past the tiles.
    #[test]
    fn vector_transforms_give_the_scalar_bits() {
        if !std::arch::is_x86_feature_detected!("avx512f") {
            eprintln!("no AVX-512F: F(4×4) transposed transforms not tested");
            return;
        }
        let mut seed = 9u64;
        let shapes: [(usize, usize, usize, usize); 4] = [
            (32, 14, 14, 1),
            (16, 13, 15, 0),
            (16, 1, 2, 2),
            (48, 12, 12, 0),
        ];
        for (c, h, w, col0) in shapes {
            let (th, tw) = (h.div_ceil(4), w.div_ceil(4));
            let tiles = th * tw;
            let img = data(c * h * w, &mut seed);
            let ld = (col0 + tiles + 1) * c + 5;
            for kind in [Transform::Input4, Transform::Grad4] {
                let input = kind == Transform::Input4;
                let mut out = vec![f32::NAN; 36 * ld];
                let mut padded = vec![f32::NAN; padded_len(c, h, w)];
                let dims = (c, h, w);
                transform_t(
                    kind,
                    Image::Dense(&img),
                    dims,
                    &mut Grid::new(&mut padded),
                    &mut out,
                    ld,
                    col0,
                );
                for ch in 0..c {
                    let px = |y: isize, x: isize| -> f32 {
                        let inside = (0..h as isize).contains(&y) && (0..w as isize).contains(&x);
                        if inside {
                            img[ch * h * w + y as usize * w + x as usize]
                        } else {
                            0.0
                        }
                    };
                    for (t, (ty, tx)) in (0..th)
                        .flat_map(|a| (0..tw).map(move |b| (a, b)))
                        .enumerate()
                    {
                        let off = if input { -1 } else { 0 };
                        let at = |r: usize, s: usize| {
                            px(
                                4 * ty as isize + r as isize + off,
                                4 * tx as isize + s as isize + off,
                            )
                        };
                        let mut rows = [[0.0f32; 6]; 6];
                        for s in 0..if input { 6 } else { 4 } {
                            let column = if input {
                                bt(std::array::from_fn(|r| at(r, s)))
                            } else {
                                a_col(std::array::from_fn(|r| at(r, s)))
                            };
                            for (row, v) in rows.iter_mut().zip(column) {
                                row[s] = v;
                            }
                        }
                        for (a, row) in rows.iter().enumerate() {
                            let values = if input {
                                bt(*row)
                            } else {
                                a_col([row[0], row[1], row[2], row[3]])
                            };
                            for (b, want) in values.into_iter().enumerate() {
                                let got = out[(6 * a + b) * ld + (col0 + t) * c + ch];
                                assert_eq!(
                                    got.to_bits(),
                                    want.to_bits(),
                                    "{kind:?} {c}x{h}x{w} c{ch} ξ{} t{t}: {got} vs {want}",
                                    6 * a + b
                                );
                            }
                        }
                    }
                }
                for xi in 0..36 {
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

    /// A grid reused across images keeps only the border of the layout it last held: a run
    /// of transforms through one grid (same layout, then others, then back) gives the bits
    /// of transforms through fresh grids.
    #[test]
    fn a_reused_grid_gives_a_fresh_grids_bits() {
        if !std::arch::is_x86_feature_detected!("avx512f") {
            eprintln!("no AVX-512F: F(4×4) transposed transforms not tested");
            return;
        }
        let mut seed = 3u64;
        let runs: [(Transform, (usize, usize, usize)); 6] = [
            (Transform::Input4, (32, 14, 14)),
            (Transform::Input4, (32, 14, 14)),
            (Transform::Grad4, (32, 14, 14)),
            (Transform::Grad4, (64, 14, 14)),
            (Transform::Input4, (16, 13, 15)),
            (Transform::Input4, (32, 14, 14)),
        ];
        let mut shared = vec![f32::NAN; padded_len(64, 15, 15)];
        let mut grid = Grid::new(&mut shared);
        for (kind, (c, h, w)) in runs {
            let tiles = h.div_ceil(4) * w.div_ceil(4);
            let ld = tiles * c;
            let img = data(c * h * w, &mut seed);
            let run = |grid: &mut Grid| {
                let mut out = vec![f32::NAN; 36 * ld];
                transform_t(kind, Image::Dense(&img), (c, h, w), grid, &mut out, ld, 0);
                out
            };
            let mut fresh = vec![f32::NAN; padded_len(c, h, w)];
            let want = run(&mut Grid::new(&mut fresh));
            let got = run(&mut grid);
            assert!(
                got.iter()
                    .zip(&want)
                    .all(|(a, b)| a.to_bits() == b.to_bits()),
                "{kind:?} {c}x{h}x{w} through a reused grid"
            );
        }
    }
}
