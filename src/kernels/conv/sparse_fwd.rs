//! The output-stationary event-driven forward (see [`super`] for the contract).
//!
//! Per image, the spikes are regrouped channel-last: one mask of `⌈C_in/64⌉` words per pixel
//! of the zero-padded input grid (`(H + 2p) × (W + 2p)`, border masks empty, so no tap needs a
//! bounds test). For one output pixel and one block of [`BLOCK`] output channels the
//! accumulators live in registers (`wide::f32x8` lanes): every tap `(kh, kw)` reads the mask of
//! the input pixel it reaches, and every set channel bit adds the weight row
//! `Wp[block][tap][c][:]` — one load and one add per 8 outputs and event, no accumulator store.
//! Eight output pixels are collected in a stack tile, transposed in registers and written as
//! `y[o, q..q + 8] = s·acc + b[o]` straight into the NCHW output.

use super::super::ConvGeom;
use super::SpikeBits;
use rayon::prelude::*;
use wide::{f32x16, f32x8};

/// Output channels per register block: 8 vectors of 8 lanes. (16 vectors would fit AVX-512's
/// 32 registers too, but doubles the weight block a pixel walks: see `docs/perf.md`.)
const VECS: usize = 8;
/// Output channels per block.
const BLOCK: usize = 8 * VECS;
/// Output pixels per write tile (one 8×8 register transpose per vector).
const TILE: usize = 8;
/// Most output pixels whose event lists are decoded at once (a chunk, which may span the
/// images of a task): every output block then serves the whole chunk before the next block's
/// weights are loaded. A block's weights (`k²·C_in·64` floats, 1.2 MB for 512 input
/// channels) stay in L2 for the chunk, and all blocks (9.4 MB there) are streamed from L3
/// once per chunk, not once per image.
const CHUNK_PIXELS: usize = 1024;
/// Events after which a chunk takes no further tile: the event lists stream through the cache
/// once per output block, beside the block's weights.
const EVENT_BUDGET: usize = 1 << 18;

/// Floats of the packed weight: full blocks are [`BLOCK`] wide, the last one is the remaining
/// outputs rounded up to whole vectors (padded lanes hold 0).
fn packed_len(g: &ConvGeom) -> usize {
    let width = (g.c_out / BLOCK) * BLOCK + (g.c_out % BLOCK).div_ceil(8) * 8;
    g.col_rows() * width
}

/// A conv weight laid out for [`forward`]: block `b` of 64 outputs is stored as
/// `[tap][c][lane]`, so an event's weights for the block are one contiguous row, and rows
/// start on 64-byte boundaries (a row straddling cache lines splits half its vector loads).
/// Not `Clone`: a copy would lose the alignment.
#[derive(Debug, Default)]
pub struct PackedWeight {
    buf: Vec<f32>,
    off: usize,
    len: usize,
    /// `(C_out, C_in, k)` packed for.
    dims: (usize, usize, usize),
}

impl PackedWeight {
    /// Packs `weight` (`[C_out, C_in, k, k]` of geometry `g`), reusing this value's allocation.
    ///
    /// # Panics
    /// If `weight.len()` differs from `g.weight_len()`.
    pub fn pack(&mut self, g: &ConvGeom, weight: &[f32]) {
        assert_eq!(weight.len(), g.weight_len(), "PackedWeight::pack: length");
        let (ci, kk, kr) = (g.c_in, g.k * g.k, g.col_rows());
        let (len, dims) = (packed_len(g), (g.c_out, g.c_in, g.k));
        // The padded lanes of a last, narrower block must hold 0: they do after the first
        // fill and are never written, so a repack for the same shape skips the fill (a
        // serial memset of up to 9.4 MB per layer and step).
        if (self.len, self.dims) != (len, dims) || self.buf.len() != len + 16 {
            self.buf.clear();
            self.buf.resize(len + 16, 0.0);
            self.off = self.buf.as_ptr().align_offset(64).min(16);
            (self.len, self.dims) = (len, dims);
        }
        let wp = &mut self.buf[self.off..self.off + self.len];
        // One task per block of outputs (512 × 512 × 3 × 3 on one thread took ≈ 10 ms per
        // forward while the other core idled).
        wp.par_chunks_mut(kr * BLOCK)
            .enumerate()
            .for_each(|(b, blk)| {
                let (o0, width) = (b * BLOCK, blk.len() / kr);
                for (ol, o) in (o0..g.c_out.min(o0 + BLOCK)).enumerate() {
                    let wo = &weight[o * kr..(o + 1) * kr];
                    for c in 0..ci {
                        for tap in 0..kk {
                            blk[(tap * ci + c) * width + ol] = wo[c * kk + tap];
                        }
                    }
                }
            });
    }

    /// True if this is a weight packed for `g`'s channels and kernel size.
    pub fn packed_for(&self, g: &ConvGeom) -> bool {
        self.dims == (g.c_out, g.c_in, g.k) && self.len == packed_len(g)
    }

    /// A packed copy of `weight`, see [`PackedWeight::pack`].
    pub fn new(g: &ConvGeom, weight: &[f32]) -> Self {
        let mut p = PackedWeight::default();
        p.pack(g, weight);
        p
    }

    pub(super) fn data(&self) -> &[f32] {
        &self.buf[self.off..self.off + self.len]
    }
}

/// Per-thread scratch of the forward, shared by every layer: the channel masks of a task's
/// padded images, and the event lists of one chunk of pixels with their tiles.
#[derive(Default)]
struct Scratch {
    masks: Vec<u64>,
    events: Vec<u32>,
    /// `ends[px + 1]`: the end in `events` of the chunk's pixel `px` (`ends[0]` is 0).
    ends: Vec<usize>,
    tiles: Vec<Tile>,
}

/// `np ≤ TILE` output pixels `q..q + np` of a task's image `img`, the chunk's pixels
/// `px..px + np`.
struct Tile {
    img: usize,
    q: usize,
    np: usize,
    px: usize,
}

thread_local! {
    static SCRATCH: std::cell::RefCell<Scratch> = std::cell::RefCell::new(Scratch::default());
}

/// Fills `masks` (`(H+2p)·(W+2p)` pixels × `words` words, channel bit `c` in word `c/64`,
/// zeros on entry) from the planes of image `img`: for each group of 64 channels and 64 plane
/// positions, one 64×64 bit transpose turns the channels' plane words into the positions'
/// channel words. Scattering bit by bit cost ≈ 6 cycles per spike (8 % of a mnist-cnn
/// inference); the transpose costs the same at any density, and skips empty blocks.
fn regroup(g: &ConvGeom, x: &SpikeBits, img: usize, words: usize, masks: &mut [u64]) {
    let pw = g.w + 2 * g.pad;
    for group in 0..words {
        let channels = group * 64..(group * 64 + 64).min(g.c_in);
        for j in 0..x.words {
            let mut block = [0u64; 64];
            let mut any = 0;
            for (row, c) in block.iter_mut().zip(channels.clone()) {
                *row = x.plane_bits(img, c)[j];
                any |= *row;
            }
            if any == 0 {
                continue;
            }
            transpose64(&mut block);
            let first = 64 * j;
            let (mut iy, mut ix) = (first / g.w, first % g.w);
            for &m in &block[..64.min(x.plane - first)] {
                if m != 0 {
                    masks[((iy + g.pad) * pw + ix + g.pad) * words + group] = m;
                }
                ix += 1;
                if ix == g.w {
                    (ix, iy) = (0, iy + 1);
                }
            }
        }
    }
}

/// Transposes a 64×64 bit matrix in place: bit `i` of `a[r]` becomes bit `r` of `a[i]`
/// (six rounds of block swaps, halving the block size each round).
fn transpose64(a: &mut [u64; 64]) {
    let mut j = 32;
    let mut m: u64 = 0x0000_0000_ffff_ffff;
    while j != 0 {
        let mut k = 0;
        while k < 64 {
            let t = ((a[k] >> j) ^ a[k + j]) & m;
            a[k + j] ^= t;
            a[k] ^= t << j;
            k = (k + j + 1) & !j;
        }
        j >>= 1;
        m ^= m << j;
    }
}

/// Entries `events` has beyond the `Chunking::events + TILE·k²·C_in` events of a chunk, for decoders that write whole
/// groups of indices past the last event.
const EVENT_SLACK: usize = 16;

/// Which event decoder runs: chosen once per call from the CPU's features.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Decoder {
    /// [`decode`]: a bit-scan loop, any target.
    Scalar,
    /// [`decode_avx512`]: 16 indices per compress instruction.
    #[cfg(target_arch = "x86_64")]
    Avx512,
}

impl Decoder {
    fn detect() -> Self {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx512f") {
            return Decoder::Avx512;
        }
        Decoder::Scalar
    }
}

/// [`decode`] by `decoder`; every decoder appends the same events in the same order.
#[inline(always)]
fn decode_with(
    decoder: Decoder,
    g: &ConvGeom,
    masks: &[u64],
    words: usize,
    base: usize,
    events: &mut [u32],
    len: &mut usize,
) {
    match decoder {
        Decoder::Scalar => decode(g, masks, words, base, events, len),
        // SAFETY: `Avx512` is only chosen when the CPU reports AVX-512F.
        #[cfg(target_arch = "x86_64")]
        Decoder::Avx512 => unsafe { decode_avx512(g, masks, words, base, events, len) },
    }
}

/// [`decode`] with AVX-512F: each 16-bit slice of a mask word becomes its set bits' row
/// indices in one `vpcompressd` (lane order is bit order, so the events and their order are
/// those of [`decode`]), stored as a whole 16-lane vector. Measured on mnist-cnn's conv2
/// (`C_in = 32`, ≈ 8 events per word): the bit-scan loop was 23 % of an inference step.
///
/// # Safety
/// The CPU must support AVX-512F. `events` must hold [`EVENT_SLACK`] entries beyond the
/// events written (the forward's scratch does).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn decode_avx512(
    g: &ConvGeom,
    masks: &[u64],
    words: usize,
    base: usize,
    events: &mut [u32],
    len: &mut usize,
) {
    use std::arch::x86_64::{
        _mm512_add_epi32, _mm512_maskz_compress_epi32, _mm512_set1_epi32, _mm512_setr_epi32,
        _mm512_storeu_si512,
    };
    let iota = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    for_each_tap_word(g, masks, words, base, |rb, wd| {
        let (mut w, mut rb) = (wd, rb as i32);
        while w != 0 {
            let m = w as u16;
            let rows =
                _mm512_maskz_compress_epi32(m, _mm512_add_epi32(iota, _mm512_set1_epi32(rb)));
            let dst = &mut events[*len..*len + 16];
            // SAFETY: `dst` is 16 `u32`s in bounds (the slice index checked it); the store
            // is unaligned.
            unsafe { _mm512_storeu_si512(dst.as_mut_ptr().cast(), rows) };
            *len += m.count_ones() as usize;
            w >>= 16;
            rb += 16;
        }
    });
}

/// Calls `f(first_row, word)` for every mask word of every tap of the output pixel whose
/// top-left tap is padded pixel `base`, in tap then word order: bit `i` of the word stands
/// for weight row `first_row + i`.
#[inline(always)]
fn for_each_tap_word(
    g: &ConvGeom,
    masks: &[u64],
    words: usize,
    base: usize,
    mut f: impl FnMut(u32, u64),
) {
    let (k, ci, pw) = (g.k, g.c_in, g.w + 2 * g.pad);
    for kh in 0..k {
        for kw in 0..k {
            let pix = base + kh * pw + kw;
            let r0 = (kh * k + kw) * ci;
            for (j, &wd) in masks[pix * words..(pix + 1) * words].iter().enumerate() {
                f((r0 + 64 * j) as u32, wd);
            }
        }
    }
}

/// Appends to `events[*len..]` the weight row `tap·C_in + c` of every set channel bit `c` of
/// every tap of the output pixel whose top-left tap is padded pixel `base`, in tap then
/// channel order. Branch-light: four indices are written per step whether set or not
/// (`events` has [`EVENT_SLACK`] slack entries), so the loop runs `⌈popcount/4⌉` times per
/// word instead of mispredicting on every word's last bit.
fn decode(
    g: &ConvGeom,
    masks: &[u64],
    words: usize,
    base: usize,
    events: &mut [u32],
    len: &mut usize,
) {
    for_each_tap_word(g, masks, words, base, |rb, wd| {
        let n = wd.count_ones() as usize;
        let mut w = wd;
        let mut i = 0;
        while i < n {
            for e in &mut events[*len + i..*len + i + 4] {
                *e = rb + w.trailing_zeros();
                w &= w.wrapping_sub(1);
            }
            i += 4;
        }
        *len += n;
    });
}

/// What the tiles of one output block share: `nout` outputs from `o0` (block weights `wb`,
/// `[tap][c][8·V]` with `8·V ≥ nout`), the chunk's events, the output scale and bias, and the
/// plane and image sizes of the output `[img][C_out, OH·OW]`.
struct BlockJob<'a> {
    plane: usize,
    out_img: usize,
    events: &'a [u32],
    wb: &'a [f32],
    o0: usize,
    nout: usize,
    scale: f32,
    bias: Option<&'a [f32]>,
}

impl BlockJob<'_> {
    /// Writes tile `t`'s accumulators into its image of `yg`.
    #[inline(always)]
    fn write<const V: usize>(&self, tile: &[[f32x8; V]; TILE], t: &Tile, yg: &mut [f32]) {
        let yi = &mut yg[t.img * self.out_img..(t.img + 1) * self.out_img];
        let (o0, nout, s, b) = (self.o0, self.nout, self.scale, self.bias);
        write_tile::<V>(tile, self.plane, t.q, t.np, o0, nout, s, b, yi);
    }
}

/// One output block over `tiles` (tile `t`'s pixel `p` has the event list
/// `events[ends[t.px + p]..ends[t.px + p + 1]]`), `V` vectors of 8 outputs.
fn block<const V: usize>(job: &BlockJob, tiles: &[Tile], ends: &[usize], yg: &mut [f32]) {
    let width = 8 * V;
    for t in tiles {
        let e = &ends[t.px..=t.px + t.np];
        let tile: [[f32x8; V]; TILE] = std::array::from_fn(|p| {
            let mut acc = [f32x8::ZERO; V];
            if p < t.np {
                for &r in &job.events[e[p]..e[p + 1]] {
                    let r = r as usize * width;
                    for (a, w) in acc.iter_mut().zip(job.wb[r..r + width].chunks_exact(8)) {
                        *a += f32x8::new(w.try_into().unwrap());
                    }
                }
            }
            acc
        });
        job.write(&tile, t, yg);
    }
}

/// Writes the accumulators of `np` pixels (`tile[p][v]` = outputs `o0 + 8v..` of pixel
/// `q0 + p`) as `y[o, q] = s·acc + b[o]` through 8×8 register transposes.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn write_tile<const V: usize>(
    tile: &[[f32x8; V]; TILE],
    plane: usize,
    q0: usize,
    np: usize,
    o0: usize,
    nout: usize,
    scale: f32,
    bias: Option<&[f32]>,
    yi: &mut [f32],
) {
    let sv = f32x8::splat(scale);
    // `v` indexes the inner dimension of `tile` (a column of the 8×8 transpose).
    #[allow(clippy::needless_range_loop)]
    for v in 0..V {
        let t = f32x8::transpose(std::array::from_fn(|p| tile[p][v]));
        for (l, row) in t.iter().enumerate().take(nout.saturating_sub(8 * v)) {
            let o = o0 + 8 * v + l;
            let b = bias.map_or(0.0, |b| b[o]);
            let vals = row.mul_add(sv, f32x8::splat(b)).to_array();
            let out = &mut yi[o * plane + q0..o * plane + q0 + np];
            // A fixed-length copy for full tiles: a variable one is a `memcpy` call.
            match <&mut [f32; TILE]>::try_from(&mut *out) {
                Ok(full) => *full = vals,
                Err(_) => out.copy_from_slice(&vals[..np]),
            }
        }
    }
}

/// `f32x16` accumulators of a full block.
const WIDE: usize = BLOCK / 16;

/// `acc += Wb[row]` for a full block's weight row `row`.
#[inline(always)]
fn add_row(acc: &mut [f32x16; WIDE], wb: &[f32], row: u32) {
    let r = row as usize * BLOCK;
    for (a, w) in acc.iter_mut().zip(wb[r..r + BLOCK].chunks_exact(16)) {
        *a += f32x16::new(w.try_into().unwrap());
    }
}

/// The accumulators of [`add_row`] as the `f32x8` vectors [`write_tile`] transposes.
#[inline(always)]
fn narrow(acc: [f32x16; WIDE]) -> [f32x8; VECS] {
    std::array::from_fn(|v| {
        let a = acc[v / 2].to_array();
        f32x8::new(a[8 * (v % 2)..8 * (v % 2) + 8].try_into().unwrap())
    })
}

/// [`block::<VECS>`] for a full block of [`BLOCK`] outputs, accumulating in `f32x16` lanes:
/// on AVX-512 one load and one add per 16 outputs and event instead of per 8 (`wide` falls
/// back to pairs of `f32x8` elsewhere). Each output adds the same values in the same order, so
/// the result is bit-identical to [`block`].
fn block_full(job: &BlockJob, tiles: &[Tile], ends: &[usize], yg: &mut [f32]) {
    // Zeroed once per block, not per tile (a 2 KB memset per tile was ≈ 2.5 % of a ResNet-19
    // inference): past a partial tile's pixels, slots keep an earlier tile's sums, which the
    // transposes in `write_tile` read but never write out.
    let mut tile = [[f32x8::ZERO; VECS]; TILE];
    for t in tiles {
        let e = &ends[t.px..=t.px + t.np];
        let mut start = e[0];
        for (slot, &end) in tile.iter_mut().zip(&e[1..]) {
            let mut acc = [f32x16::ZERO; WIDE];
            for &r in &job.events[start..end] {
                add_row(&mut acc, job.wb, r);
            }
            *slot = narrow(acc);
            start = end;
        }
        job.write(&tile, t, yg);
    }
}

/// Which [`block`] instance serves an output block `width` floats wide.
type BlockFn = fn(&BlockJob, &[Tile], &[usize], &mut [f32]);

fn block_fn(width: usize) -> BlockFn {
    match width / 8 {
        1 => block::<1>,
        2 => block::<2>,
        3 => block::<3>,
        4 => block::<4>,
        5 => block::<5>,
        6 => block::<6>,
        7 => block::<7>,
        _ => block_full,
    }
}

/// How [`forward`] cuts its work: images per task, and the most pixels and events per chunk.
/// Results do not depend on it (a test forces tiny chunks).
#[derive(Clone, Copy, Debug)]
struct Chunking {
    images_per_task: usize,
    pixels: usize,
    events: usize,
}

impl Chunking {
    /// Tasks of enough images that a task's pixels fill a chunk on small planes (so the
    /// weights are streamed once per several images), few enough that every thread gets
    /// several tasks.
    fn for_geometry(g: &ConvGeom, threads: usize) -> Self {
        let fill = CHUNK_PIXELS.div_ceil(g.out_plane().max(1));
        let spread = (g.n / (4 * threads.max(1))).max(1);
        Chunking {
            images_per_task: fill.min(spread).max(1),
            pixels: CHUNK_PIXELS,
            events: EVENT_BUDGET,
        }
    }
}

/// `y ← conv(x, W) + bias` for spike input `x`; `wp` is the weight packed for `g`, `y`
/// is `[N, C_out, OH, OW]` (overwritten, never read). One task per group of images; each
/// output is a sum in a fixed order (taps, then channels ascending), so results depend
/// neither on the grouping nor on the thread count.
///
/// # Panics
/// If a length disagrees with `g`.
pub fn forward(
    g: &ConvGeom,
    x: &SpikeBits,
    wp: &PackedWeight,
    bias: Option<&[f32]>,
    y: &mut [f32],
) {
    let cut = Chunking::for_geometry(g, rayon::current_num_threads());
    forward_chunked(g, x, wp, bias, y, cut);
}

/// [`forward`] with the work cut by `cut`.
fn forward_chunked(
    g: &ConvGeom,
    x: &SpikeBits,
    wp: &PackedWeight,
    bias: Option<&[f32]>,
    y: &mut [f32],
    cut: Chunking,
) {
    assert!(
        x.n == g.n
            && x.c == g.c_in
            && x.plane == g.h * g.w
            && wp.dims == (g.c_out, g.c_in, g.k)
            && y.len() == g.n * g.out_img()
            && bias.is_none_or(|b| b.len() == g.c_out),
        "sparse conv forward: lengths do not match {g:?}"
    );
    if g.n == 0 {
        return;
    }
    let (words, kr, s) = (g.c_in.div_ceil(64), g.col_rows(), x.scale);
    let wp = wp.data();
    let (plane, ow, st, pw) = (g.out_plane(), g.ow, g.stride, g.w + 2 * g.pad);
    let mask_len = (g.h + 2 * g.pad) * pw * words;
    let decoder = Decoder::detect();
    let group = cut.images_per_task;
    y.par_chunks_mut(group * g.out_img())
        .enumerate()
        .for_each(|(task, yg)| {
            SCRATCH.with(|cell| {
                let Scratch {
                    masks,
                    events,
                    ends,
                    tiles,
                } = &mut *cell.borrow_mut();
                let (img0, nimg) = (task * group, yg.len() / g.out_img());
                masks.clear();
                masks.resize(nimg * mask_len, 0);
                for (i, m) in masks.chunks_exact_mut(mask_len).enumerate() {
                    regroup(g, x, img0 + i, words, m);
                }
                // Stale entries are fine: `decode` writes before `block` reads.
                let cap = cut.events + TILE * kr + EVENT_SLACK;
                if events.len() < cap {
                    events.resize(cap, 0);
                }
                ends.resize(cut.pixels + TILE + 1, 0);
                // The next tile to decode: image `img`, first pixel `q`.
                let (mut img, mut q) = (0, 0);
                while img < nimg {
                    // Decode whole tiles (which never straddle images) until the chunk is full.
                    tiles.clear();
                    let (mut len, mut px) = (0, 0);
                    while img < nimg && len < cut.events && px < cut.pixels {
                        let np = TILE.min(plane - q);
                        let m = &masks[img * mask_len..(img + 1) * mask_len];
                        for (p, end) in ends[px + 1..=px + np].iter_mut().enumerate() {
                            let qp = q + p;
                            let base = (qp / ow) * st * pw + (qp % ow) * st;
                            decode_with(decoder, g, m, words, base, events, &mut len);
                            *end = len;
                        }
                        tiles.push(Tile { img, q, np, px });
                        px += np;
                        q += np;
                        if q == plane {
                            (img, q) = (img + 1, 0);
                        }
                    }
                    let mut start = 0;
                    for o0 in (0..g.c_out).step_by(BLOCK) {
                        let nout = BLOCK.min(g.c_out - o0);
                        let width = nout.div_ceil(8) * 8;
                        let job = BlockJob {
                            plane,
                            out_img: g.out_img(),
                            events,
                            wb: &wp[start..start + kr * width],
                            o0,
                            nout,
                            scale: s,
                            bias,
                        };
                        start += kr * width;
                        block_fn(width)(&job, tiles, ends, yg);
                    }
                }
            })
        });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A xorshift64 generator: deterministic test inputs without a dependency.
    fn xorshift(mut seed: u64) -> impl FnMut() -> u64 {
        move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        }
    }

    /// The bit-by-bit scatter `regroup` replaced: the reference it must match.
    fn regroup_by_bits(g: &ConvGeom, x: &SpikeBits, img: usize, words: usize, masks: &mut [u64]) {
        let pw = g.w + 2 * g.pad;
        for c in 0..g.c_in {
            for pos in 0..x.plane {
                if x.plane_bits(img, c)[pos / 64] >> (pos % 64) & 1 == 1 {
                    let (iy, ix) = (pos / g.w, pos % g.w);
                    masks[((iy + g.pad) * pw + ix + g.pad) * words + c / 64] |= 1 << (c % 64);
                }
            }
        }
    }

    /// The transposing regroup matches a bit-by-bit scatter: channel counts below, at and
    /// above one word, rows shorter and longer than a word, with and without padding, dense
    /// and sparse inputs and empty blocks.
    #[test]
    fn regroup_matches_a_bit_by_bit_scatter() {
        let mut next = xorshift(0x1234_5678_9abc_def1);
        let mut checked = 0;
        for (c_in, hw, pad) in [(3, 5, 1), (32, 14, 1), (64, 9, 0), (130, 8, 1), (70, 70, 2)] {
            for keep in [1, 4, 50] {
                let g = ConvGeom::new(2, c_in, hw, hw, 8, 3, 1, pad).unwrap();
                let x: Vec<f32> = (0..g.n * g.in_img())
                    .map(|_| {
                        if next().is_multiple_of(keep) {
                            1.0
                        } else {
                            0.0
                        }
                    })
                    .collect();
                let bits = SpikeBits::from_f32(&x, g.n, c_in, hw * hw, 1.0);
                let words = c_in.div_ceil(64);
                let len = (hw + 2 * pad) * (hw + 2 * pad) * words;
                for img in 0..g.n {
                    let (mut want, mut got) = (vec![0u64; len], vec![0u64; len]);
                    regroup_by_bits(&g, &bits, img, words, &mut want);
                    regroup(&g, &bits, img, words, &mut got);
                    assert_eq!(got, want, "C_in {c_in} {hw}x{hw} pad {pad} 1/{keep}");
                    checked += want.iter().map(|w| w.count_ones()).sum::<u32>();
                }
            }
        }
        assert!(checked > 10_000, "too few spikes: {checked}");
    }

    /// Tasks of several images, chunks cut mid-image by the pixel or the event limit, and
    /// tiles shorter than [`TILE`] at plane ends give the same output bits as the default cut.
    #[test]
    fn output_bits_do_not_depend_on_the_chunking() {
        let mut next = xorshift(0x2545_f491_4f6c_dd1d);
        for (c_in, c_out, hw, stride) in [(70, 130, 7, 1), (64, 64, 9, 2), (5, 24, 6, 1)] {
            let g = ConvGeom::new(7, c_in, hw, hw, c_out, 3, stride, 1).unwrap();
            let x: Vec<f32> = (0..g.n * g.in_img())
                .map(|_| if next().is_multiple_of(5) { 0.5 } else { 0.0 })
                .collect();
            let bits = SpikeBits::from_f32(&x, g.n, c_in, hw * hw, 0.5);
            let w: Vec<f32> = (0..g.weight_len())
                .map(|_| (next() % 2001) as f32 / 1000.0 - 1.0)
                .collect();
            let bias: Vec<f32> = (0..c_out).map(|o| o as f32 * 0.01).collect();
            let wp = PackedWeight::new(&g, &w);
            let mut want = vec![f32::NAN; g.n * g.out_img()];
            forward(&g, &bits, &wp, Some(&bias), &mut want);
            let cuts = [(1, 8, 1), (3, 16, 40), (2, 1024, 7), (7, 24, 1 << 20)];
            for (images_per_task, pixels, events) in cuts {
                let cut = Chunking {
                    images_per_task,
                    pixels,
                    events,
                };
                let mut got = vec![f32::NAN; want.len()];
                forward_chunked(&g, &bits, &wp, Some(&bias), &mut got, cut);
                let same = got
                    .iter()
                    .zip(&want)
                    .all(|(a, b)| a.to_bits() == b.to_bits());
                assert!(same, "{g:?} {cut:?}");
            }
        }
    }

    /// Every decoder this CPU has appends the same event rows, in the same order, as the
    /// bit-scan loop: masks of one and several words, empty, full and sparse words, a stride.
    #[test]
    fn decoders_append_the_same_events() {
        let mut next = xorshift(0x9e37_79b9_7f4a_7c15);
        let mut checked = 0;
        for (c_in, stride) in [(32, 1), (64, 1), (130, 2), (7, 1)] {
            let g = ConvGeom::new(1, c_in, 5, 6, 8, 3, stride, 1).unwrap();
            let words = c_in.div_ceil(64);
            let pixels = (g.h + 2) * (g.w + 2);
            let masks: Vec<u64> = (0..pixels * words)
                .map(|i| {
                    let valid = if (i % words + 1) * 64 <= c_in {
                        u64::MAX
                    } else {
                        (1u64 << (c_in % 64)) - 1
                    };
                    let w = match i % 5 {
                        0 => 0,
                        1 => u64::MAX,
                        2 => next() & next(),
                        _ => next(),
                    };
                    w & valid
                })
                .collect();
            let pw = g.w + 2;
            for q in 0..g.out_plane() {
                let base = (q / g.ow) * stride * pw + (q % g.ow) * stride;
                let cap = g.col_rows() + EVENT_SLACK;
                let (mut want, mut want_len) = (vec![0u32; cap], 0);
                decode(&g, &masks, words, base, &mut want, &mut want_len);
                let decoder = Decoder::detect();
                #[cfg(target_arch = "x86_64")]
                if std::arch::is_x86_feature_detected!("avx512f") {
                    assert_eq!(decoder, Decoder::Avx512);
                }
                let (mut got, mut got_len) = (vec![u32::MAX; cap], 0);
                decode_with(decoder, &g, &masks, words, base, &mut got, &mut got_len);
                assert_eq!(got_len, want_len, "{decoder:?} C_in {c_in} pixel {q}");
                assert_eq!(
                    got[..got_len],
                    want[..want_len],
                    "{decoder:?} C_in {c_in} pixel {q}"
                );
                checked += want_len;
            }
        }
        assert!(checked > 10_000, "too few events: {checked}");
    }
}
