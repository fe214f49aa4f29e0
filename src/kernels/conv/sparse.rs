//! Spike-aware (event-driven) convolution for inputs whose elements are all `0` or one value `s`
//! — the output of a LIF layer (DESIGN.md, performance principle 2).
//!
//! The input is kept bit-packed ([`SpikeBits`]: one bit per element, each `(image, channel)`
//! plane padded to whole `u64` words), 1/32 of its f32 size. Only set bits ("events") cost work:
//! - forward (output-stationary, `sparse_fwd.rs`): the spikes of an image are regrouped into
//!   one channel mask per input pixel; for every output pixel and block of 64 outputs, the
//!   accumulators stay in registers while the taps' masks are walked and every set channel bit
//!   adds its weight row `Wp[tap, c, block]`; then `y[o, q] = s·acc[q, o] + b[o]` is written
//!   straight to the NCHW output through an 8×8 register transpose;
//! - weight gradient: for every event at input `(c, iy, ix)` and every kernel tap `(kh, kw)`
//!   that maps it to an output position `q`, add the output-gradient row
//!   `dYt[q, :]` (`dY` transposed to channel-last) into `dWt[c, kh, kw, :]`; then
//!   `dW[o, c, kh, kw] += s·dWt[c, kh, kw, o]`.
//!
//! The input gradient needs every `dY` value and stays a dense GEMM.
//!
//! An event costs `k²·C_out` vector additions, i.e. the work of the dense GEMM scaled by the
//! density. In the forward each addition is one load and one add (against register-blocked
//! FMAs in the GEMM micro-kernel); in the weight gradient it is two loads and a store, hence
//! the measured switch points [`fwd_max_density`] and [`wgrad_max_density`].
//!
//! Results equal the dense path up to float rounding (the sparse sums add weights and scale by
//! `s` once; the GEMM adds `s·w` products in another order). Parallel tasks are fixed by the
//! shape — images for the forward, input-channel blocks (disjoint rows of `dWt`, each summing
//! images in order) for the weight gradient — so results are bit-identical for every thread
//! count.

use super::ConvGeom;
use rayon::prelude::*;
use wide::f32x16;

/// The forward pass never takes the event-driven path above this input density (fraction of
/// nonzero elements); see [`fwd_max_density`] for the per-shape switch point.
pub const FWD_MAX_DENSITY: f64 = 0.5;

/// The input density up to which the forward pass of geometry `g` takes the event-driven path
/// (above it, im2col + GEMM): `0.5 − 38/(k²·C_in)`, at least 0. An event costs the same per
/// output as a dense multiply-add at about half the density, but every output pixel also
/// pays a fixed cost (event decoding, the transposed write of `C_out` values) that the GEMM
/// spreads over `k²·C_in` products, so shapes with few products per output switch earlier.
/// Fitted to `benches/kernels.rs` (`conv2d_sparse`, 2 threads; see `docs/perf.md`): measured
/// break-even ≈ 0.5 at ResNet-19 layers 1 and 3 (`k²·C_in` = 1152, 4608), ≈ 0.45 at the MNIST
/// conv2 (288), ≈ 0.2 at the 1×1 shortcut (128).
///
/// Where the dense forward is Winograd F(4×4, 3×3) ([`super::winograd::f43::preferred`]) it
/// does 36/144 of the multiplies, and the switch point is `0.15 + 4/C_in` instead (if lower):
/// measured break-even (`conv2d_sparse`, `sparse_fwd` against `dense_fwd`, 1 and 2 threads)
/// ≈ 0.27–0.30 at the MNIST conv2 (`C_in` = 32), ≈ 0.15–0.18 at ResNet-19 layer 1 (128),
/// ≈ 0.23 at layer 2 (256). On planes four tiles wide (13–16 pixels) its transforms run a
/// vector per four tile rows, and the switch is `0.15 + 2/C_in`: the MNIST conv2's
/// break-even fell to ≈ 0.20–0.25 (`sparse_fwd` 5.1–6.1 ms at 0.2, 6.0–6.1 at 0.25, dense
/// 5.9–6.1, 2 threads, two runs).
pub fn fwd_max_density(g: &ConvGeom) -> f64 {
    let im2col = (FWD_MAX_DENSITY - 38.0 / g.col_rows() as f64).max(0.0);
    if super::winograd::f43::preferred(g) {
        let per_channel = if g.w.div_ceil(4) == 4 { 2.0 } else { 4.0 };
        im2col.min(0.15 + per_channel / g.c_in as f64)
    } else {
        im2col
    }
}

/// The input density up to which the weight gradient of geometry `g` takes the event-driven
/// path (above it, im2col + GEMM). Measured with `benches/kernels.rs` (`conv2d_sparse`,
/// `sparse_dw` against `dense_dw`, 2 threads) after the register sums of `sum_rows`:
/// break-even ≈ 0.18 at the MNIST conv2 (32→64, 3×3), ≈ 0.22 at ResNet-19 layer 1 (128→128),
/// ≈ 0.28 at layer 3 (512→512): 0.18 for kernels larger than 1×1, the lowest of the three.
/// A 1×1 conv reuses no event across taps: the kernel alone lost to the GEMM at density 0.05
/// (1.58 vs 1.39 ms on the 128→256 shortcut), but in a training step the dense path must
/// first unpack the bits to f32, and switching the shortcuts to it made ResNet-19 training
/// slower; 1×1 keeps the earlier 0.08. Where the dense weight gradient is Winograd
/// F(3×3, 4×4) ([`super::winograd::weight::takes_f4x4`]) the MNIST conv2's break-even fell to
/// ≈ 0.08 (dense 6.4–7.2 ms; event path 5.9 at 0.05, 6.9–8.3 at 0.1, 2 threads): 0.08.
pub fn wgrad_max_density(g: &ConvGeom) -> f64 {
    if g.k == 1 || super::winograd::weight::takes_f4x4(g) {
        0.08
    } else {
        0.18
    }
}

/// Bit-packed spikes of a `[N, C, H, W]` tensor whose elements are `0` or `scale`.
///
/// Bit `i` of word `j` of plane `(n, c)` is element `64·j + i` of that plane; padding bits are 0.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SpikeBits {
    n: usize,
    c: usize,
    plane: usize,
    words: usize,
    scale: f32,
    ones: u64,
    bits: Vec<u64>,
}

impl SpikeBits {
    /// Packs `x` (`n·c` planes of `plane` elements): bit set iff the element is nonzero.
    /// Reuses this value's allocation.
    ///
    /// # Panics
    /// If `x.len() != n·c·plane`.
    pub fn pack(&mut self, x: &[f32], n: usize, c: usize, plane: usize, scale: f32) {
        assert_eq!(x.len(), n * c * plane, "SpikeBits::pack: length");
        let words = plane.div_ceil(64);
        self.bits.clear();
        self.bits.resize(n * c * words, 0);
        (self.n, self.c, self.plane, self.words, self.scale) = (n, c, plane, words, scale);
        if words == 0 {
            self.ones = 0;
            return;
        }
        self.ones = self
            .bits
            .par_chunks_mut(words)
            .zip(x.par_chunks(plane))
            .with_min_len(64)
            .map(|(out, xp)| {
                let mut ones = 0u64;
                for (w, chunk) in out.iter_mut().zip(xp.chunks(64)) {
                    let v = nonzero_mask(chunk);
                    ones += v.count_ones() as u64;
                    *w = v;
                }
                ones
            })
            .sum();
    }

    /// A packed copy of `x`, see [`SpikeBits::pack`].
    pub fn from_f32(x: &[f32], n: usize, c: usize, plane: usize, scale: f32) -> Self {
        let mut b = SpikeBits::default();
        b.pack(x, n, c, plane, scale);
        b
    }

    /// Bits written by a kernel that produced the spikes itself (a LIF layer packing its output
    /// plane by plane, see [`pack_plane`]): `words` holds `n·c` planes of
    /// `plane.div_ceil(64)` words laid out as [`SpikeBits::pack`] lays them out. Padding bits
    /// past `plane` are cleared, so the result equals [`SpikeBits::pack`] of the tensor the
    /// bits stand for.
    ///
    /// # Panics
    /// If `words.len()` differs from `n·c·plane.div_ceil(64)`.
    pub fn from_words(n: usize, c: usize, plane: usize, scale: f32, mut words: Vec<u64>) -> Self {
        let per_plane = plane.div_ceil(64);
        assert_eq!(
            words.len(),
            n * c * per_plane,
            "SpikeBits::from_words: length"
        );
        let tail = plane % 64;
        let ones = if per_plane == 0 {
            0
        } else {
            words
                .par_chunks_mut(per_plane)
                .with_min_len(1024)
                .map(|w| {
                    if tail != 0 {
                        w[per_plane - 1] &= (1u64 << tail) - 1;
                    }
                    w.iter().map(|x| x.count_ones() as u64).sum::<u64>()
                })
                .sum()
        };
        SpikeBits {
            n,
            c,
            plane,
            words: per_plane,
            scale,
            ones,
            bits: words,
        }
    }

    /// `(n, c, plane)`: the bits stand for a `[n, c, …]` tensor of `plane` elements per
    /// `(image, channel)` plane.
    pub fn geometry(&self) -> (usize, usize, usize) {
        (self.n, self.c, self.plane)
    }

    /// Words per plane, `plane.div_ceil(64)`.
    pub fn plane_words(&self) -> usize {
        self.words
    }

    /// All words, plane after plane (see the type docs).
    pub fn words(&self) -> &[u64] {
        &self.bits
    }

    /// Fraction of set bits (0 for an empty tensor).
    pub fn density(&self) -> f64 {
        let len = self.n * self.c * self.plane;
        if len == 0 {
            0.0
        } else {
            self.ones as f64 / len as f64
        }
    }

    /// The spike value `s`.
    pub fn scale(&self) -> f32 {
        self.scale
    }

    /// Number of set bits.
    pub fn ones(&self) -> u64 {
        self.ones
    }

    /// Elements the bits stand for (`N·C·plane`).
    pub fn len(&self) -> usize {
        self.n * self.c * self.plane
    }

    /// True if there are no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes of packed storage.
    pub fn bytes(&self) -> usize {
        8 * self.bits.len()
    }

    /// The words of plane `(img, ch)`.
    fn plane_bits(&self, img: usize, ch: usize) -> &[u64] {
        let s = (img * self.c + ch) * self.words;
        &self.bits[s..s + self.words]
    }

    /// `out ← out + x` for the tensor `x` the bits stand for, added element by element as
    /// [`crate::kernels::elementwise::par_add_assign`] would add [`SpikeBits::unpack`]'s output
    /// (unset bits add `+0.0`, so even `-0.0` sums come out alike): an identity shortcut
    /// without an f32 copy of its input.
    ///
    /// # Panics
    /// If `out.len()` differs from [`SpikeBits::len`].
    pub fn add_to(&self, out: &mut [f32]) {
        assert_eq!(out.len(), self.len(), "SpikeBits::add_to: length");
        self.for_each_value(out, |e, v| *e += v);
    }

    /// Writes the f32 tensor back: `scale` where a bit is set, `0` elsewhere.
    ///
    /// # Panics
    /// If `out.len()` differs from [`SpikeBits::len`].
    pub fn unpack(&self, out: &mut [f32]) {
        assert_eq!(out.len(), self.len(), "SpikeBits::unpack: length");
        self.for_each_value(out, |e, v| *e = v);
    }

    /// Calls `f(&mut out[i], v)` on all threads for every element, `v` being the element's
    /// value (`scale` where its bit is set, `+0.0` elsewhere). `out.len()` is [`SpikeBits::len`].
    #[inline(always)]
    fn for_each_value(&self, out: &mut [f32], f: impl Fn(&mut f32, f32) + Sync) {
        if self.plane == 0 {
            return;
        }
        let s = self.scale;
        out.par_chunks_mut(self.plane)
            .zip(self.bits.par_chunks(self.words))
            .with_min_len(64)
            .for_each(|(op, wp)| {
                for (chunk, &w) in op.chunks_mut(64).zip(wp) {
                    for (i, e) in chunk.iter_mut().enumerate() {
                        f(e, if (w >> i) & 1 == 1 { s } else { 0.0 });
                    }
                }
            });
    }
}

/// Calls `f(q)` for every set bit `q` of `words`, in increasing order.
#[inline(always)]
fn for_each_event(words: &[u64], mut f: impl FnMut(usize)) {
    for (j, &w) in words.iter().enumerate() {
        let mut w = w;
        while w != 0 {
            let i = w.trailing_zeros() as usize;
            w &= w - 1;
            f(64 * j + i);
        }
    }
}

/// The taps of one axis that reach an output: for input coordinate `i`, the kernel offsets
/// `kk` with `i + p − kk = o·s` for an output `o` in `0..len_out`, as `(first kk, first o,
/// count)`; consecutive taps step `kk` by `s` and `o` down by 1.
#[inline(always)]
fn taps(i: usize, k: usize, s: usize, p: usize, len_out: usize) -> (usize, usize, usize) {
    let ip = i + p;
    // kk ≤ ip and kk ≤ k−1; o = (ip − kk)/s ≤ len_out − 1 ⇒ kk ≥ ip − (len_out−1)·s.
    let hi = ip.min(k - 1);
    let lo = ip.saturating_sub((len_out - 1) * s);
    if lo > hi {
        return (0, 0, 0);
    }
    let first = lo + (ip - lo) % s;
    if first > hi {
        return (0, 0, 0);
    }
    (first, (ip - first) / s, (hi - first) / s + 1)
}

#[inline(always)]
fn add_row(dst: &mut [f32], src: &[f32]) {
    for (d, s) in dst.iter_mut().zip(src) {
        *d += *s;
    }
}

/// `dst += Σ rows[q]` over `qs` in order, where row `q` is `src[q·len..(q+1)·len]` and
/// `len == dst.len()`. Blocks of 64 columns are summed in registers (one load per 16 values
/// instead of a load, an add and a store into `dst` per row); every column still adds the
/// rows one by one in `qs` order, so the bits equal those of [`add_row`] per row.
#[inline(always)]
fn sum_rows(dst: &mut [f32], src: &[f32], len: usize, qs: &[u32]) {
    if qs.is_empty() {
        return;
    }
    const W: usize = 64;
    let full = len / W * W;
    for (b, d) in dst[..full].chunks_exact_mut(W).enumerate() {
        let lane = |v: &[f32], i: usize| f32x16::new(v[16 * i..16 * i + 16].try_into().unwrap());
        let mut acc = [lane(d, 0), lane(d, 1), lane(d, 2), lane(d, 3)];
        for &q in qs {
            let row: &[f32; W] = src[q as usize * len + b * W..][..W].try_into().unwrap();
            for (i, a) in acc.iter_mut().enumerate() {
                *a += lane(row, i);
            }
        }
        for (i, a) in acc.iter().enumerate() {
            d[16 * i..16 * i + 16].copy_from_slice(&a.to_array());
        }
    }
    if full < len {
        for &q in qs {
            let q = q as usize * len;
            add_row(&mut dst[full..], &src[q + full..q + len]);
        }
    }
}

/// `dY` elements transposed per group of images in the weight gradient (4 MiB).
const WGRAD_GROUP_LEN: usize = 1 << 20;

/// Per kernel tap, a list of output positions (at most `cap` each), reused across planes.
#[derive(Default)]
struct TapLists {
    cap: usize,
    len: Vec<usize>,
    at: Vec<u32>,
}

thread_local! {
    static TAP_LISTS: std::cell::RefCell<TapLists> = std::cell::RefCell::default();
}

impl TapLists {
    /// Sizes the lists for `taps` taps of at most `cap` positions each (all empty).
    fn reset(&mut self, taps: usize, cap: usize) {
        self.cap = cap;
        self.len.clear();
        self.len.resize(taps, 0);
        if self.at.len() < taps * cap {
            self.at.resize(taps * cap, 0);
        }
    }

    fn clear(&mut self) {
        self.len.fill(0);
    }

    #[inline(always)]
    fn push(&mut self, tap: usize, q: u32) {
        self.at[tap * self.cap + self.len[tap]] = q;
        self.len[tap] += 1;
    }

    fn get(&self, tap: usize) -> &[u32] {
        &self.at[tap * self.cap..][..self.len[tap]]
    }
}

/// Per-axis tap tables of one geometry: entry `i` is [`taps`] of input row (or column) `i`.
struct TapTable {
    y: Vec<(usize, usize, usize)>,
    x: Vec<(usize, usize, usize)>,
}

impl TapTable {
    fn new(g: &ConvGeom) -> Self {
        let (k, s, p) = (g.k, g.stride, g.pad);
        TapTable {
            y: (0..g.h).map(|i| taps(i, k, s, p, g.oh)).collect(),
            x: (0..g.w).map(|i| taps(i, k, s, p, g.ow)).collect(),
        }
    }
}

/// Calls `f(tap, q)` for every event of the plane `words` and every kernel tap
/// `tap = kh·k + kw` that maps it to output position `q`. Rows are tracked incrementally (events
/// come in increasing position order), so no division runs per event.
#[inline(always)]
fn for_each_event_tap(g: &ConvGeom, t: &TapTable, words: &[u64], mut f: impl FnMut(usize, usize)) {
    let (w, k, s, ow) = (g.w, g.k, g.stride, g.ow);
    let (mut iy, mut row0) = (0usize, 0usize);
    for_each_event(words, |pos| {
        while pos >= row0 + w {
            row0 += w;
            iy += 1;
        }
        let (kh0, oy0, nh) = t.y[iy];
        let (kw0, ox0, nw) = t.x[pos - row0];
        for a in 0..nh {
            let (tap_row, q_row) = ((kh0 + a * s) * k + kw0, (oy0 - a) * ow + ox0);
            for b in 0..nw {
                f(tap_row + b * s, q_row - b);
            }
        }
    });
}

/// `dst[j, i] = a·src[i, j]` for a `rows × cols` row-major `src`, in 8×8 tiles: rows of a
/// plane are often 4 KiB apart, and a taller tile would put more lines in one L1 set than it
/// has ways.
fn transpose(src: &[f32], rows: usize, cols: usize, dst: &mut [f32], a: f32) {
    const TILE: usize = 8;
    for i0 in (0..rows).step_by(TILE) {
        let i1 = (i0 + TILE).min(rows);
        for j0 in (0..cols).step_by(TILE) {
            let j1 = (j0 + TILE).min(cols);
            for j in j0..j1 {
                let out = &mut dst[j * rows + i0..j * rows + i1];
                for (i, o) in (i0..i1).zip(out) {
                    *o = a * src[i * cols + j];
                }
            }
        }
    }
}

/// Input channels per weight-gradient task: a task's `dWt` rows (`cb·k²·C_out` floats) stay
/// in L2 while it walks the images; at least 16 tasks where the layer has the channels.
fn wgrad_block(g: &ConvGeom) -> usize {
    (g.c_in / 16).clamp(1, 8)
}

/// `dw += ∂L/∂W` for spike input `x` and `dy = ∂L/∂y` (`[N, C_out, OH, OW]`).
///
/// Allocates two temporaries: `dY` of a group of images transposed to channel-last (at most
/// 4 MiB, or one image) and `dWt` (the size of `dw`); both are freed on return.
///
/// # Panics
/// If a length disagrees with `g`.
pub fn backward_weight(g: &ConvGeom, x: &SpikeBits, dy: &[f32], dw: &mut [f32]) {
    backward_weight_grouped(g, x, dy, dw, WGRAD_GROUP_LEN);
}

/// [`backward_weight`] transposing `dY` in groups of about `group_len` elements (whole images).
fn backward_weight_grouped(
    g: &ConvGeom,
    x: &SpikeBits,
    dy: &[f32],
    dw: &mut [f32],
    group_len: usize,
) {
    assert!(
        x.n == g.n
            && x.c == g.c_in
            && x.plane == g.h * g.w
            && dw.len() == g.weight_len()
            && dy.len() == g.n * g.out_img(),
        "sparse conv backward_weight: lengths do not match {g:?}"
    );
    if g.n == 0 || x.ones == 0 {
        return;
    }
    let (co, kk, plane) = (g.c_out, g.k * g.k, g.out_plane());
    // dY goes channel-last a group of images at a time: a whole-batch copy would be as large
    // as dY itself (134 MB on ResNet-19's first stage), at the step's memory peak.
    let group = (group_len / g.out_img()).clamp(1, g.n);
    let mut dyt = vec![0.0f32; group * g.out_img()];
    let cb = wgrad_block(g);
    let table = TapTable::new(g);
    let mut dwt = vec![0.0f32; dw.len()];
    for first in (0..g.n).step_by(group) {
        let imgs = group.min(g.n - first);
        let dyg = &dy[first * g.out_img()..(first + imgs) * g.out_img()];
        dyt.par_chunks_mut(g.out_img())
            .zip(dyg.par_chunks(g.out_img()))
            .for_each(|(t, d)| transpose(d, co, plane, t, 1.0));
        let dyt = &dyt;
        dwt.par_chunks_mut(cb * kk * co)
            .enumerate()
            .for_each(|(blk, part)| {
                let c0 = blk * cb;
                let chans = part.len() / (kk * co);
                TAP_LISTS.with(|cell| {
                    let mut reach = cell.borrow_mut();
                    reach.reset(kk, g.h * g.w);
                    for (i, dyi) in dyt.chunks_exact(g.out_img()).take(imgs).enumerate() {
                        for cl in 0..chans {
                            reach.clear();
                            let words = x.plane_bits(first + i, c0 + cl);
                            for_each_event_tap(g, &table, words, |tap, q| {
                                reach.push(tap, q as u32);
                            });
                            let pc = &mut part[cl * kk * co..(cl + 1) * kk * co];
                            for (tap, dst) in pc.chunks_exact_mut(co).enumerate() {
                                sum_rows(dst, dyi, co, reach.get(tap));
                            }
                        }
                    }
                });
            });
    }
    drop(dyt);
    // dW[o, r] += s·dWt[r, o], in row blocks of dW so each task's tiles stay in cache.
    let (kr, s) = (g.col_rows(), x.scale);
    const ROWS: usize = 8;
    dw.par_chunks_mut(ROWS * kr)
        .enumerate()
        .for_each(|(blk, rows)| {
            let o0 = blk * ROWS;
            let nr = rows.len() / kr;
            // dWt[:, o0..o0+nr] is a kr × nr block with row stride co.
            for r in 0..kr {
                for (i, &v) in dwt[r * co + o0..r * co + o0 + nr].iter().enumerate() {
                    let d = &mut rows[i * kr + r];
                    *d += s * v;
                }
            }
        });
}

#[path = "sparse_fwd.rs"]
mod fwd;
pub use fwd::{forward, PackedWeight};

/// Packs one plane as [`SpikeBits::pack`] does: bit `i` of `words[j]` set iff
/// `x[64·j + i] != 0.0` (`words.len()` is `x.len().div_ceil(64)`), for a kernel that packs its
/// output while the plane is still in cache.
///
/// # Panics
/// If `words.len()` differs from `x.len().div_ceil(64)`.
#[inline]
pub fn pack_plane(x: &[f32], words: &mut [u64]) {
    assert_eq!(words.len(), x.len().div_ceil(64), "pack_plane: length");
    for (w, chunk) in words.iter_mut().zip(x.chunks(64)) {
        *w = nonzero_mask(chunk);
    }
}

/// Bit `i` set iff `chunk[i] != 0.0` (`chunk.len() ≤ 64`); 16 lanes per compare for full
/// chunks.
#[inline]
fn nonzero_mask(chunk: &[f32]) -> u64 {
    // A short chunk (a plane's tail) is zero-padded rather than tested element by element:
    // planes of 49 or 196 elements are mostly tail.
    let mut padded = [0.0f32; 64];
    let full = match <&[f32; 64]>::try_from(chunk) {
        Ok(full) => full,
        Err(_) => {
            padded[..chunk.len()].copy_from_slice(chunk);
            &padded
        }
    };
    let mut v = 0u64;
    for (q, lanes) in full.chunks_exact(16).enumerate() {
        let x = f32x16::new(lanes.try_into().unwrap());
        v |= (x.simd_ne(f32x16::ZERO).to_bitmask() as u64) << (16 * q);
    }
    v
}

#[cfg(test)]
#[path = "sparse_tests.rs"]
mod tests;
