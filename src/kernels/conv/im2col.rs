//! im2col, its adjoint col2im, and the column gather/scatter that lets several images share
//! one GEMM.
//!
//! The im2col matrix of one image has `K = C_in·k·k` rows `(c, kh, kw)` and `P = OH·OW`
//! columns `(oy, ox)`. Functions here write or read it inside a wider matrix: row `r` starts at
//! `r·ld` (`ld ≥ P`), so the matrices of `G` images can sit side by side as one `K × G·P`
//! operand.

use super::ConvGeom;
use crate::kernels::elementwise::add_assign;

/// Output positions `o` in `0..len_out` whose input index `o·s + kpos − p` lies in
/// `0..len_in`, as a half-open range.
pub(super) fn valid_range(
    kpos: usize,
    s: usize,
    p: usize,
    len_in: usize,
    len_out: usize,
) -> (usize, usize) {
    let lo = if p > kpos { (p - kpos).div_ceil(s) } else { 0 };
    let hi = if len_in + p > kpos {
        ((len_in + p - kpos - 1) / s + 1).min(len_out)
    } else {
        0
    };
    (lo.min(hi), hi)
}

/// True for "same" stride-1 convs (`OW = W`, padding narrower than the image): every im2col
/// row is then the input plane shifted by `(kh − p)·W + (kw − p)`, so whole planes move in
/// one copy instead of `OH` short ones.
fn is_same(g: &ConvGeom) -> bool {
    g.stride == 1 && g.ow == g.w && g.pad < g.w
}

/// For a "same" conv: the input range `src` and the row range `dst` that the valid output
/// rows `oy0..oy1` of kernel offset `(kh, kw)` map to, as one shifted block.
fn shifted_block(
    g: &ConvGeom,
    kh: usize,
    kw: usize,
    oy0: usize,
    oy1: usize,
) -> (usize, usize, usize) {
    let (w, p) = (g.w as isize, g.pad as isize);
    let d = kh as isize * w + kw as isize - (p * w + p);
    // p < W keeps both ends inside the plane: oy0·W + d ≤ (H−1)·W + p < H·W and
    // oy1·W + d ≥ W − p > 0.
    let s_lo = (oy0 as isize * w + d).max(0);
    let s_hi = (oy1 as isize * w + d).min(g.h as isize * w);
    (s_lo as usize, (s_lo - d) as usize, (s_hi - s_lo) as usize)
}

/// Zeroes columns `..x0` and `x1..` of every `w`-wide row of `rows`. The usual edge is one
/// column (padding 1), written directly: a `memset` call per image row cost ~6 % of a conv.
fn zero_edges(rows: &mut [f32], w: usize, x0: usize, x1: usize) {
    if x0 == 0 && x1 == w {
        return;
    }
    for r in rows.chunks_exact_mut(w) {
        match x0 {
            0 => {}
            1 => r[0] = 0.0,
            _ => r[..x0].fill(0.0),
        }
        match w - x1 {
            0 => {}
            1 => r[w - 1] = 0.0,
            _ => r[x1..].fill(0.0),
        }
    }
}

/// Writes rows `(c, kh, kw)` for `c` in `c0..c1` of image `x_img`'s im2col matrix into `col`,
/// row `r` at `col[r·ld..r·ld + P]`: element `(r, oy·OW + ox)` is
/// `x_img[c, oy·s + kh − p, ox·s + kw − p]`, or 0 in the padding. Every element of those row
/// segments is written and none is read; the gaps between them are untouched.
///
/// # Panics
/// If `ld < P`, `c1 > C_in`, or a slice is too short.
pub fn im2col(g: &ConvGeom, x_img: &[f32], c0: usize, c1: usize, col: &mut [f32], ld: usize) {
    let (k, s, p, w, ow) = (g.k, g.stride, g.pad, g.w, g.ow);
    let plane = g.out_plane();
    assert!(
        ld >= plane && c1 <= g.c_in,
        "im2col: ld {ld} < P {plane} or c1 {c1} > C_in"
    );
    let same = is_same(g);
    let mut r = 0;
    for c in c0..c1 {
        let xc = &x_img[c * g.h * w..(c + 1) * g.h * w];
        for kh in 0..k {
            let (oy0, oy1) = valid_range(kh, s, p, g.h, g.oh);
            for kw in 0..k {
                let row = &mut col[r * ld..r * ld + plane];
                r += 1;
                let (ox0, ox1) = valid_range(kw, s, p, w, ow);
                if same && oy0 < oy1 {
                    let (src, dst, len) = shifted_block(g, kh, kw, oy0, oy1);
                    row[..dst].fill(0.0);
                    row[dst..dst + len].copy_from_slice(&xc[src..src + len]);
                    row[dst + len..].fill(0.0);
                    // Columns that wrapped around a row edge belong to the padding.
                    zero_edges(&mut row[oy0 * w..oy1 * w], w, ox0, ox1);
                    continue;
                }
                row[..oy0 * ow].fill(0.0);
                row[oy1 * ow..].fill(0.0);
                for oy in oy0..oy1 {
                    let src = &xc[(oy * s + kh - p) * w..][..w];
                    let out = &mut row[oy * ow..(oy + 1) * ow];
                    out[..ox0].fill(0.0);
                    out[ox1..].fill(0.0);
                    let ix0 = ox0 * s + kw - p;
                    let len = ox1 - ox0;
                    match s {
                        1 => out[ox0..ox1].copy_from_slice(&src[ix0..ix0 + len]),
                        // Pairs let LLVM vectorize the stride-2 gather (ResNet shortcuts and
                        // downsampling convs); the last pair may lack its second element.
                        2 => {
                            let (o, sr) = (&mut out[ox0..ox1], &src[ix0..ix0 + 2 * len - 1]);
                            for j in 0..len {
                                o[j] = sr[2 * j];
                            }
                        }
                        _ => {
                            for (o, v) in out[ox0..ox1].iter_mut().zip(src[ix0..].iter().step_by(s))
                            {
                                *o = *v;
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Writes an image's im2col matrix (all `K` rows, row `r` at `col[r·ld..]`) summed back into
/// `dx_img` (overwritten, never read): im2col's adjoint, `⟨col2im(c), x⟩ = ⟨c, im2col(x)⟩`.
///
/// For a "same" conv the centre tap covers the whole plane, so it is copied first and the
/// other taps added to it: no zero fill (which took 3 % of a ResNet-19 training step, the
/// scatter-add 5 %). Other convs zero each channel plane just before adding into it.
///
/// `col` is scratch: entries that fall in the zero padding may be overwritten with 0 (the
/// "same"-conv path zeroes them so a whole shifted block can be added at once; adding 0.0
/// leaves `dx` unchanged).
///
/// # Panics
/// If `ld < P` or a slice is too short.
pub fn col2im(g: &ConvGeom, col: &mut [f32], ld: usize, dx_img: &mut [f32]) {
    let (k, p, w) = (g.k, g.pad, g.w);
    let plane = g.out_plane();
    assert!(ld >= plane, "col2im: ld {ld} < P {plane}");
    let (taps, hw, same) = (k * k, g.h * w, is_same(g));
    for c in 0..g.c_in {
        let dxc = &mut dx_img[c * hw..(c + 1) * hw];
        let rows = &mut col[c * taps * ld..];
        if same {
            // OW = W forces k = 2p + 1 and OH = H: tap (p, p) is the identity shift.
            let centre = p * k + p;
            dxc.copy_from_slice(&rows[centre * ld..centre * ld + plane]);
            for tap in (0..taps).filter(|&t| t != centre) {
                let (kh, kw) = (tap / k, tap % k);
                let row = &mut rows[tap * ld..tap * ld + plane];
                let (oy0, oy1) = valid_range(kh, 1, p, g.h, g.oh);
                let (ox0, ox1) = valid_range(kw, 1, p, w, g.ow);
                if ox0 == ox1 || oy0 == oy1 {
                    continue;
                }
                zero_edges(&mut row[oy0 * w..oy1 * w], w, ox0, ox1);
                let (src, dst, len) = shifted_block(g, kh, kw, oy0, oy1);
                add_assign(&mut dxc[src..src + len], &row[dst..dst + len]);
            }
        } else {
            dxc.fill(0.0);
            for tap in 0..taps {
                add_tap(g, tap / k, tap % k, &rows[tap * ld..tap * ld + plane], dxc);
            }
        }
    }
}

/// Adds one im2col row, kernel offset `(kh, kw)`, into its channel plane `dxc` (any stride).
fn add_tap(g: &ConvGeom, kh: usize, kw: usize, row: &[f32], dxc: &mut [f32]) {
    let (s, p, w, ow) = (g.stride, g.pad, g.w, g.ow);
    let (oy0, oy1) = valid_range(kh, s, p, g.h, g.oh);
    let (ox0, ox1) = valid_range(kw, s, p, w, ow);
    if ox0 == ox1 || oy0 == oy1 {
        return;
    }
    let ix0 = ox0 * s + kw - p;
    for oy in oy0..oy1 {
        let dst = &mut dxc[(oy * s + kh - p) * w..][..w];
        let src = &row[oy * ow + ox0..oy * ow + ox1];
        if s == 1 {
            add_assign(&mut dst[ix0..ix0 + src.len()], src);
        } else {
            for (d, v) in dst[ix0..].iter_mut().step_by(s).zip(src) {
                *d += *v;
            }
        }
    }
}

/// Copies `count` consecutive `rows × plane` matrices (`src`, image after image) side by side
/// into `dst` (`rows × count·plane`, row-major).
pub(super) fn gather(src: &[f32], rows: usize, plane: usize, count: usize, dst: &mut [f32]) {
    let ld = count * plane;
    for j in 0..count {
        let img = &src[j * rows * plane..(j + 1) * rows * plane];
        for (r, row) in img.chunks_exact(plane).enumerate() {
            dst[r * ld + j * plane..][..plane].copy_from_slice(row);
        }
    }
}

/// The inverse of [`gather`]: splits `src` (`rows × count·plane`) into `count` consecutive
/// `rows × plane` matrices in `dst`.
pub(super) fn scatter(src: &[f32], rows: usize, plane: usize, count: usize, dst: &mut [f32]) {
    let ld = count * plane;
    for j in 0..count {
        let img = &mut dst[j * rows * plane..(j + 1) * rows * plane];
        for (r, row) in img.chunks_exact_mut(plane).enumerate() {
            row.copy_from_slice(&src[r * ld + j * plane..][..plane]);
        }
    }
}
