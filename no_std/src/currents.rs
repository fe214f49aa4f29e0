//! Currents: how an operation's terms become each output neuron's `T` input currents.
//!
//! Three ways, chosen per operation:
//! - convolutions on spikes are event-driven ([`scatter`]): one output channel at a time, every
//!   input neuron that spiked adds its weights to the currents (in a scratch workspace of
//!   `H·W·T` accumulators) of the outputs it reaches, at its spike times; silent inputs cost one
//!   test, and there are no multiplications (int8: `i32` sums, one multiply per current);
//! - the analog stem (a convolution on the input) reads and normalizes each input patch once
//!   and reuses it for every output channel ([`stem`]);
//! - everything else (identities, pooled inputs) is gathered neuron by neuron ([`add_term`]).

use crate::blob::{F32s, MAX_T};
use crate::ops::{Conv, Shape, Term, TermKind, Weights};
use crate::run::{Analog, Ctx, Spikes, Src};

/// Adds `w` to `acc[t]` for every set bit `t`.
#[inline(always)]
fn add_bits<A: Copy + core::ops::AddAssign>(acc: &mut [A; MAX_T], mut bits: u32, w: A) {
    while bits != 0 {
        if let Some(a) = acc.get_mut(bits.trailing_zeros() as usize) {
            *a += w;
        }
        bits &= bits - 1;
    }
}

/// Visits the kernel taps of output `(oy, ox)` that fall inside the (pooled) source, calling
/// `f(weight_index, ci, py, px)` in weight order.
#[inline(always)]
fn taps(
    c: &Conv<'_>,
    hp: usize,
    wp: usize,
    oy: usize,
    ox: usize,
    mut f: impl FnMut(usize, usize, usize, usize),
) {
    let mut i = 0;
    for ci in 0..c.cin {
        for ky in 0..c.kh {
            // Wrapping turns a position in the top padding into a huge index, rejected below.
            let py = (oy * c.stride + ky).wrapping_sub(c.pad);
            if py >= hp {
                i += c.kw;
                continue;
            }
            for kx in 0..c.kw {
                let px = (ox * c.stride + kx).wrapping_sub(c.pad);
                if px < wp {
                    f(i, ci, py, px);
                }
                i += 1;
            }
        }
    }
}

/// The pooled source size for a conv term.
fn pooled(c: &Conv<'_>, s: Shape) -> (usize, usize) {
    match c.pool {
        None => (s.h, s.w),
        Some(p) => ((s.h - p.kh) / p.sh + 1, (s.w - p.kw) / p.sw + 1),
    }
}

/// Spike-input convolution: integer-free accumulate of weight `w(i)` per active input.
#[inline]
fn conv_spikes<A: Copy + Default + core::ops::AddAssign>(
    c: &Conv<'_>,
    map: &Spikes<'_>,
    oy: usize,
    ox: usize,
    w: impl Fn(usize) -> A,
    acc: &mut [A; MAX_T],
) {
    let (hp, wp) = pooled(c, map.shape);
    match c.pool {
        None => taps(c, hp, wp, oy, ox, |i, ci, y, x| {
            let bits = map.bits(ci, y, x);
            if bits != 0 {
                add_bits(acc, bits, w(i));
            }
        }),
        Some(p) => taps(c, hp, wp, oy, ox, |i, ci, py, px| {
            let wi = w(i);
            for dy in 0..p.kh {
                for dx in 0..p.kw {
                    add_bits(acc, map.bits(ci, py * p.sh + dy, px * p.sw + dx), wi);
                }
            }
        }),
    }
}

/// Analog-input convolution (the stem): `acc[p] += w(i) · x[p]` for each input plane `p`.
#[inline]
fn conv_analog(
    c: &Conv<'_>,
    x: &Analog<'_>,
    planes: usize,
    oy: usize,
    ox: usize,
    w: impl Fn(usize) -> f32,
    acc: &mut [f32; MAX_T],
) {
    let (hp, wp) = pooled(c, x.shape);
    for (p, a) in acc.iter_mut().enumerate().take(planes) {
        taps(c, hp, wp, oy, ox, |i, ci, py, px| {
            let v = match c.pool {
                None => x.get(p, ci, py, px),
                Some(pl) => {
                    let mut s = 0.0;
                    for dy in 0..pl.kh {
                        for dx in 0..pl.kw {
                            s += x.get(p, ci, py * pl.sh + dy, px * pl.sw + dx);
                        }
                    }
                    s
                }
            };
            *a += w(i) * v;
        });
    }
}

/// Adds term `term`'s contribution to output neuron `(co, oy, ox)` into `cur[..t]`.
#[inline]
fn add_term(
    term: &Term<'_>,
    src: &Src<'_>,
    ctx: &Ctx<'_>,
    co: usize,
    oy: usize,
    ox: usize,
    cur: &mut [f32; MAX_T],
) {
    let Ctx { x, t, planes } = *ctx;
    match (&term.kind, src) {
        (TermKind::Conv(c), Src::Spikes(map)) => {
            let row = co * c.cin * c.kh * c.kw;
            match c.weights {
                Weights::F32(w) => {
                    let mut acc = [0.0f32; MAX_T];
                    conv_spikes(c, map, oy, ox, |i| w.get(row + i), &mut acc);
                    for (o, a) in cur.iter_mut().zip(acc).take(t) {
                        *o += a;
                    }
                }
                Weights::I8 { q, scale } => {
                    let mut acc = [0i32; MAX_T];
                    let qw = |i: usize| i32::from(q.get(row + i).copied().unwrap_or(0) as i8);
                    conv_spikes(c, map, oy, ox, qw, &mut acc);
                    let s = scale.get(co);
                    for (o, a) in cur.iter_mut().zip(acc).take(t) {
                        *o += a as f32 * s;
                    }
                }
            }
        }
        (TermKind::Conv(c), Src::Input) => {
            let row = co * c.cin * c.kh * c.kw;
            let mut acc = [0.0f32; MAX_T];
            let s = match c.weights {
                Weights::F32(w) => {
                    conv_analog(c, x, planes, oy, ox, |i| w.get(row + i), &mut acc);
                    1.0
                }
                Weights::I8 { q, scale } => {
                    let qw = |i: usize| f32::from(q.get(row + i).copied().unwrap_or(0) as i8);
                    conv_analog(c, x, planes, oy, ox, qw, &mut acc);
                    scale.get(co)
                }
            };
            add_planes(cur, &acc, t, planes, s);
        }
        (TermKind::Identity(scale), Src::Spikes(map)) => {
            add_bits(cur, map.bits(co, oy, ox), scale.get(co));
        }
        (TermKind::Identity(scale), Src::Input) => {
            let mut acc = [0.0f32; MAX_T];
            for (p, a) in acc.iter_mut().enumerate().take(planes) {
                *a = x.get(p, co, oy, ox);
            }
            add_planes(cur, &acc, t, planes, scale.get(co));
        }
    }
}

/// `cur[t] += s · acc[plane(t)]`, where one plane is shared by every timestep.
#[inline]
fn add_planes(cur: &mut [f32; MAX_T], acc: &[f32; MAX_T], t: usize, planes: usize, s: f32) {
    for (k, o) in cur.iter_mut().enumerate().take(t) {
        let a = if planes == 1 {
            acc[0]
        } else {
            acc.get(k).copied().unwrap_or(0.0)
        };
        *o += if s == 1.0 { a } else { a * s };
    }
}

/// The per-output-channel current workspace: `H·W·T` f32 (as bits) and, for int8 layers, as
/// many i32 (as bits) accumulators.
pub(crate) struct Workspace<'w> {
    pub(crate) cur: &'w mut [u32],
    pub(crate) acc: &'w mut [u32],
}

/// Event-driven convolution of a spike map into one output channel `co`: every input neuron
/// with a non-empty spike train adds its weights to the currents of the outputs it reaches,
/// at the timesteps it spiked; silent inputs cost one test. `cells` holds `T` accumulators per
/// output position of the channel. Per output, the additions arrive in `(ci, ky, kx)` order,
/// the same order as the tap-by-tap gather, so f32 results are identical to it.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn scatter<A: Copy>(
    c: &Conv<'_>,
    map: &Spikes<'_>,
    co: usize,
    out: Shape,
    t: usize,
    w: impl Fn(usize) -> A,
    cells: &mut [u32],
    add: impl Fn(&mut u32, A),
) {
    let row = co * c.cin * c.kh * c.kw;
    let (hin, win) = (map.shape.h, map.shape.w);
    let mut n = 0;
    for ci in 0..c.cin {
        let wrow = row + ci * c.kh * c.kw;
        for iy in 0..hin {
            for ix in 0..win {
                let bits = map.bits_at(n);
                n += 1;
                if bits == 0 {
                    continue;
                }
                // Taps reaching an output: `o = (i + pad − k) / stride`, divisible, `o < out`.
                let (ry, rx) = (iy + c.pad, ix + c.pad);
                let mut ky = ry % c.stride;
                while ky < c.kh && ky <= ry {
                    let oy = (ry - ky) / c.stride;
                    if oy < out.h {
                        let mut kx = rx % c.stride;
                        while kx < c.kw && kx <= rx {
                            let ox = (rx - kx) / c.stride;
                            if ox < out.w {
                                let wv = w(wrow + ky * c.kw + kx);
                                let base = (oy * out.w + ox) * t;
                                if let Some(cell) = cells.get_mut(base..base + t) {
                                    let mut b = bits;
                                    while b != 0 {
                                        if let Some(x) = cell.get_mut(b.trailing_zeros() as usize) {
                                            add(x, wv);
                                        }
                                        b &= b - 1;
                                    }
                                }
                            }
                            kx += c.stride;
                        }
                    }
                    ky += c.stride;
                }
            }
        }
    }
}

#[inline(always)]
fn add_f32(x: &mut u32, w: f32) {
    *x = (f32::from_bits(*x) + w).to_bits();
}

#[inline(always)]
fn add_i32(x: &mut u32, q: i32) {
    *x = x.wrapping_add(q as u32);
}

/// Computes the currents of every output neuron (channel-major) and hands them to `emit`.
///
/// Operations with a convolution on a spike buffer work one output channel at a time in the
/// workspace ([`scatter`]); the others (the analog stem, pooled inputs, identities) compute
/// neuron by neuron with the currents on the stack.
pub(crate) fn neuron(
    terms: &[Term<'_>],
    srcs: &[Src<'_>],
    ctx: &Ctx<'_>,
    shape: Shape,
    bias: F32s<'_>,
    ws: &mut Workspace<'_>,
    mut emit: impl FnMut(usize, &[f32; MAX_T]),
) {
    let t = ctx.t;
    let hw = shape.h * shape.w;
    if let ([term], [Src::Input]) = (terms, srcs) {
        if let TermKind::Conv(c) = &term.kind {
            if stem(c, ctx, shape, bias, &mut emit) {
                return;
            }
        }
    }
    if crate::model::scatter_kind(terms).is_none() {
        let mut n = 0;
        // Hoisted: only the first `t` entries are used, and re-zeroing 32 per neuron shows.
        let mut cur = [0.0f32; MAX_T];
        for co in 0..shape.c {
            let b = bias.get(co);
            for oy in 0..shape.h {
                for ox in 0..shape.w {
                    cur.iter_mut().take(t).for_each(|c| *c = 0.0);
                    for (term, src) in terms.iter().zip(srcs) {
                        add_term(term, src, ctx, co, oy, ox, &mut cur);
                    }
                    for c in cur.iter_mut().take(t) {
                        *c += b;
                    }
                    emit(n, &cur);
                    n += 1;
                }
            }
        }
        return;
    }
    let (Some(cur), acc) = (ws.cur.get_mut(..hw * t), ws.acc.get_mut(..hw * t)) else {
        return;
    };
    let mut acc = acc;
    let mut c = [0.0f32; MAX_T];
    for co in 0..shape.c {
        cur.fill(0); // the bits of 0.0f32
        for (term, src) in terms.iter().zip(srcs) {
            match (&term.kind, src) {
                (TermKind::Conv(c), Src::Spikes(map)) if c.pool.is_none() => match c.weights {
                    Weights::F32(w) => scatter(c, map, co, shape, t, |i| w.get(i), cur, add_f32),
                    Weights::I8 { q, scale } => {
                        let Some(acc) = acc.as_deref_mut() else {
                            continue;
                        };
                        acc.fill(0);
                        let qw = |i: usize| i32::from(q.get(i).copied().unwrap_or(0) as i8);
                        scatter(c, map, co, shape, t, qw, acc, add_i32);
                        let s = scale.get(co);
                        for (x, &a) in cur.iter_mut().zip(acc.iter()) {
                            add_f32(x, a as i32 as f32 * s);
                        }
                    }
                },
                _ => {
                    for (j, cell) in cur.chunks_exact_mut(t).enumerate() {
                        let mut tmp = [0.0f32; MAX_T];
                        add_term(term, src, ctx, co, j / shape.w, j % shape.w, &mut tmp);
                        for (x, v) in cell.iter_mut().zip(tmp) {
                            add_f32(x, v);
                        }
                    }
                }
            }
        }
        let b = bias.get(co);
        for (j, cell) in cur.chunks_exact(t).enumerate() {
            for (o, &x) in c.iter_mut().zip(cell) {
                *o = f32::from_bits(x) + b;
            }
            emit(co * hw + j, &c);
        }
    }
}

/// Largest `planes · C_in · kh · kw` input patch [`stem`] caches (1 KiB of stack).
const PATCH: usize = 256;

/// The analog stem as a lone convolution on the input: each output position's input patch is
/// read and normalized once and reused by every output channel, instead of once per channel.
/// Padding taps hold 0 (adding `w · 0` leaves the sum bit-identical to skipping them, since
/// the weights are finite). Returns `false` (nothing done) when the patch does not fit.
fn stem(
    c: &Conv<'_>,
    ctx: &Ctx<'_>,
    shape: Shape,
    bias: F32s<'_>,
    emit: &mut impl FnMut(usize, &[f32; MAX_T]),
) -> bool {
    let k = c.cin * c.kh * c.kw;
    let planes = ctx.planes;
    if c.pool.is_some() || planes * k > PATCH {
        return false;
    }
    let x = ctx.x;
    let (hin, win) = (x.shape.h, x.shape.w);
    let hw = shape.h * shape.w;
    let mut patch = [0.0f32; PATCH];
    let (mut acc, mut cur) = ([0.0f32; MAX_T], [0.0f32; MAX_T]);
    for oy in 0..shape.h {
        for ox in 0..shape.w {
            if let Some(used) = patch.get_mut(..planes * k) {
                used.fill(0.0);
            }
            for (p, plane) in patch.chunks_exact_mut(k).enumerate().take(planes) {
                taps(c, hin, win, oy, ox, |i, ci, y, xx| {
                    if let Some(v) = plane.get_mut(i) {
                        *v = x.get(p, ci, y, xx);
                    }
                });
            }
            for co in 0..shape.c {
                let row = co * k;
                acc.iter_mut().take(planes).for_each(|a| *a = 0.0);
                let s = match c.weights {
                    Weights::F32(w) => {
                        let w = w.slice(row, k);
                        for (a, plane) in acc.iter_mut().zip(patch.chunks_exact(k)).take(planes) {
                            for (wi, &v) in w.iter().zip(plane) {
                                *a += wi * v;
                            }
                        }
                        1.0
                    }
                    Weights::I8 { q, scale } => {
                        let q = q.get(row..row + k).unwrap_or(&[]);
                        for (a, plane) in acc.iter_mut().zip(patch.chunks_exact(k)).take(planes) {
                            for (&qi, &v) in q.iter().zip(plane) {
                                *a += f32::from(qi as i8) * v;
                            }
                        }
                        scale.get(co)
                    }
                };
                cur.iter_mut().take(ctx.t).for_each(|c| *c = 0.0);
                add_planes(&mut cur, &acc, ctx.t, planes, s);
                let b = bias.get(co);
                for v in cur.iter_mut().take(ctx.t) {
                    *v += b;
                }
                emit(co * hw + oy * shape.w + ox, &cur);
            }
        }
    }
    true
}
