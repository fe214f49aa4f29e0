//! The fused multi-step LIF kernels: all T timesteps of a layer in one call over a time-major
//! `[T, N]` view (row `t` = the N neurons at step t), forward in place (input → output) and
//! backward in place (∂L/∂O → ∂L/∂I), built from the pure step functions of
//! [`crate::neuron::step`].
//!
//! Work is split into fixed chunks of [`CHUNK`] neurons. A chunk runs its whole time loop with
//! each neuron's state in a register (`f32x16` lanes, scalar tail), so every element is read and
//! written once per step. Chunks run on rayon when there are several; each returns partial sums
//! (spike counts, Σ `U[T]` over active neurons, g_θ, g_decay in f64), which are added in chunk
//! order. Chunk boundaries do not depend on the thread count, so results are bit-identical for
//! any number of threads.
//!
//! What backward needs is kept in a [`Tape`]: the pre-spike membrane M as f32, and optionally the
//! spikes ([`SpikeStorage`]). Spikes are a function of the cached M (`S = 1[M ≥ θ]`, the very
//! comparison the forward made), so by default they are recomputed rather than stored; the
//! 1-bit and 1-byte layouts exist for a future compressed-M tape and were measured (see
//! [`SpikeStorage`]).

mod fused;
mod input_affine;
mod planes;
#[cfg(target_arch = "x86_64")]
mod pool2x2;
mod reference;
mod route;
#[cfg(test)]
mod tests;
mod train_planes;

pub use planes::{
    forward_eval_planes, forward_eval_planes_in_place, Addend, ChannelAffine, PlaneStages,
};
pub use reference::{backward_reference, forward_reference, ReferenceForward};
pub use train_planes::{
    backward_train_planes, backward_train_planes_to_stem, forward_train_planes,
};

use crate::neuron::step::{reset, StepParams};
use fused::{Bits, Bytes, Format, InputAffine, Recompute};
use rayon::prelude::*;

/// Neurons per work chunk: a multiple of 8 (bit-packed rows split on byte boundaries), large
/// enough that the per-chunk cost (row splitting, one f64 partial sum) is negligible, small
/// enough that the smallest ResNet-19 layer (512×8×8, B = 64) still makes 16 chunks to share.
pub const CHUNK: usize = 16 * 1024;

/// How the forward pass keeps the spikes `S[t]` for backward.
///
/// Measured forward+backward at ResNet-19's layer sizes (B = 64, T = 4; `benches/lif.rs`
/// `spike_storage` group and interleaved best-of-20 runs, on a 2-vCPU VM shared with other
/// jobs, ±30 % noise): Recompute and Bits were within the noise of each other (e.g. 1 thread,
/// 128×32×32: 1.53 vs 1.88 ns per neuron-step in one series, 67.7 vs 62.7 ms in another);
/// Bytes was slowest in most series (up to +67 %). The kernels are memory-bound, and 1/8 byte
/// per neuron-step is ~0.5 % of their traffic. Recompute keeps the smallest tape (Bits adds
/// T·N/8 bytes, Bytes T·N) and is the default.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SpikeStorage {
    /// Not stored: backward recomputes `S = 1[M ≥ θ]` from the cached M (0 bytes).
    #[default]
    Recompute,
    /// One bit per spike, 8 neurons per byte, each row padded to a whole byte.
    Bits,
    /// One byte (0 or 1) per spike.
    Bytes,
}

impl SpikeStorage {
    /// Bytes one row of `n` neurons takes.
    pub fn row_bytes(self, n: usize) -> usize {
        match self {
            SpikeStorage::Recompute => Recompute::row_bytes(n),
            SpikeStorage::Bits => Bits::row_bytes(n),
            SpikeStorage::Bytes => Bytes::row_bytes(n),
        }
    }
}

/// What a training forward leaves for backward: M (`[T, N]`, f32) and the spikes in the chosen
/// [`SpikeStorage`]. Reused across steps: [`Tape::prepare`] only grows the buffers.
#[derive(Clone, Debug, Default)]
pub struct Tape {
    timesteps: usize,
    neurons: usize,
    theta: f32,
    storage: SpikeStorage,
    membrane: Vec<f32>,
    spikes: Vec<u8>,
}

impl Tape {
    /// An empty tape that will keep spikes as `storage`.
    pub fn new(storage: SpikeStorage) -> Self {
        Tape {
            storage,
            ..Tape::default()
        }
    }

    /// Sizes the tape for `timesteps × neurons` (contents unspecified until a forward fills it).
    pub fn prepare(&mut self, timesteps: usize, neurons: usize) {
        self.timesteps = timesteps;
        self.neurons = neurons;
        let len = timesteps * neurons;
        if self.membrane.len() < len && self.membrane.capacity() < len {
            // A fresh tape (deferred layers rebuild theirs every step): zero it on all threads.
            self.membrane = super::elementwise::par_zeroed(len);
        }
        self.membrane.resize(len, 0.0);
        self.spikes
            .resize(timesteps * self.storage.row_bytes(neurons), 0);
    }

    /// Hands the tape `buffer` to hold M when [`Tape::prepare`] next needs more room than it
    /// has, so a caller can recycle a large buffer instead of faulting in fresh pages. Its
    /// contents need not be zero: a forward writes every M it keeps.
    pub fn supply_membrane(&mut self, buffer: Vec<f32>) {
        if buffer.capacity() > self.membrane.capacity() {
            self.membrane = buffer;
        }
    }

    /// Empties the tape (T = N = 0) and returns the buffer that held M, for the caller to
    /// recycle.
    pub fn take_membrane(&mut self) -> Vec<f32> {
        self.timesteps = 0;
        self.neurons = 0;
        self.spikes = Vec::new();
        std::mem::take(&mut self.membrane)
    }

    /// Number of timesteps T.
    pub fn timesteps(&self) -> usize {
        self.timesteps
    }

    /// Neurons per timestep N.
    pub fn neurons(&self) -> usize {
        self.neurons
    }

    /// The spike storage.
    pub fn storage(&self) -> SpikeStorage {
        self.storage
    }

    /// The cached pre-spike membrane M, `[T, N]` time-major.
    pub fn membrane(&self) -> &[f32] {
        &self.membrane[..self.timesteps * self.neurons]
    }

    /// The stored spike bytes (empty for [`SpikeStorage::Recompute`]).
    pub fn spike_bytes(&self) -> &[u8] {
        &self.spikes[..self.timesteps * self.storage.row_bytes(self.neurons)]
    }

    /// `S[t]` of neuron `j`, as the forward pass decided it.
    ///
    /// # Panics
    /// If `t` or `j` is out of range.
    pub fn spike(&self, t: usize, j: usize) -> bool {
        assert!(
            t < self.timesteps && j < self.neurons,
            "Tape::spike out of range"
        );
        let m = self.membrane[t * self.neurons + j];
        let rb = self.storage.row_bytes(self.neurons);
        let row = &self.spikes[t * rb..(t + 1) * rb];
        match self.storage {
            SpikeStorage::Recompute => Recompute::get1(row, j, m, self.theta),
            SpikeStorage::Bits => Bits::get1(row, j, m, self.theta),
            SpikeStorage::Bytes => Bytes::get1(row, j, m, self.theta),
        }
    }

    /// Bytes held by the tape's buffers.
    pub fn heap_bytes(&self) -> usize {
        self.membrane.capacity() * 4 + self.spikes.capacity()
    }

    /// The post-reset potential `U[T]` of every neuron into `out` (length N).
    ///
    /// # Panics
    /// If the tape is empty (T = 0) or `out` has the wrong length.
    pub fn last_potential(&self, p: &StepParams, out: &mut [f32]) {
        assert!(self.timesteps > 0 && out.len() == self.neurons);
        let t = self.timesteps - 1;
        for (j, u) in out.iter_mut().enumerate() {
            *u = reset(p, self.membrane[t * self.neurons + j], self.spike(t, j));
        }
    }
}

/// Partial sums of a forward pass.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ForwardSums {
    /// Σ S over all T·N (t, neuron) pairs.
    pub spikes: u64,
    /// Neurons that spiked at least once.
    pub active: u64,
    /// Σ `U[T]` over those neurons (the MP-Init statistic).
    pub sum_u_active: f64,
}

impl ForwardSums {
    fn add(self, o: ForwardSums) -> ForwardSums {
        ForwardSums {
            spikes: self.spikes + o.spikes,
            active: self.active + o.active,
            sum_u_active: self.sum_u_active + o.sum_u_active,
        }
    }
}

/// Parameter-gradient sums of a backward pass.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct BackwardSums {
    /// ∂L/∂θ (multiply by sigmoid(k) for ∂L/∂k).
    pub g_theta: f64,
    /// Σ g_M·(M − U_prev) (multiply by 1 − λ for ∂L/∂w).
    pub g_decay: f64,
}

impl BackwardSums {
    fn add(self, o: BackwardSums) -> BackwardSums {
        BackwardSums {
            g_theta: self.g_theta + o.g_theta,
            g_decay: self.g_decay + o.g_decay,
        }
    }
}

/// Training forward: `io` holds I `[T, N]` on entry and O on return; M (and the spikes, per the
/// tape's storage) go to `tape`, which is resized to `T × N`. `u0` is `U[0]` for every neuron.
///
/// # Panics
/// If `timesteps` is 0 or does not divide `io.len()`.
pub fn forward_train(
    p: &StepParams,
    u0: f32,
    timesteps: usize,
    io: &mut [f32],
    tape: &mut Tape,
) -> ForwardSums {
    let n = neurons(io.len(), timesteps);
    tape.prepare(timesteps, n);
    tape.theta = p.theta;
    let (m, s) = (&mut tape.membrane[..timesteps * n], &mut tape.spikes[..]);
    match tape.storage {
        SpikeStorage::Recompute => run_forward::<Recompute, true>(p, u0, timesteps, n, io, m, s),
        SpikeStorage::Bits => run_forward::<Bits, true>(p, u0, timesteps, n, io, m, s),
        SpikeStorage::Bytes => run_forward::<Bytes, true>(p, u0, timesteps, n, io, m, s),
    }
}

/// The LIF forward of a training batch norm's output, which is never written out: step `t`'s
/// input is `(x − mean[c])·scale[c] + shift[c]` for `x` = row `t` of `x` (`[T, N]`, read only)
/// and `c` the neuron's channel (`[B, C, plane]` within a step), computed as
/// [`super::bn::normalize`] computes it, so outputs, tape and sums are the same bits as
/// normalizing first and calling [`forward_train`] / [`forward_eval`].
///
/// `out` (`[T, N]`, overwritten) receives O if given; `tape`, if given, is sized and filled as
/// [`forward_train`] fills it. Needs `plane % 16 == 0` (see [`affine_fits`]).
///
/// # Panics
/// If `timesteps` is 0 or does not divide `x.len()`, `out` has another length, `plane` does
/// not divide a step or is not a multiple of 16, an `affine` slice is not `C` long, or both
/// `out` and `tape` are `None`.
#[allow(clippy::too_many_arguments)]
pub fn forward_affine(
    p: &StepParams,
    u0: f32,
    timesteps: usize,
    x: &[f32],
    affine: &ChannelAffine,
    plane: usize,
    out: Option<&mut [f32]>,
    tape: Option<&mut Tape>,
) -> ForwardSums {
    let n = neurons(x.len(), timesteps);
    let c = affine.mean.len();
    assert!(
        affine_fits(plane) && n.is_multiple_of(plane * c),
        "lif forward_affine: plane {plane} × {c} channels does not tile {n} neurons"
    );
    assert!(affine.scale.len() == c && affine.shift.len() == c);
    let has_out = out.is_some();
    assert!(
        has_out || tape.is_some(),
        "lif forward_affine: neither output nor tape"
    );
    if let Some(o) = &out {
        assert_eq!(o.len(), x.len(), "lif forward_affine: output length");
    }
    let chunks = chunk_count(n);
    let mut out_rows = match out {
        Some(o) => split_rows(o, timesteps, n, CHUNK, chunks),
        None => empty_rows(chunks * timesteps),
    };
    let (mut m_rows, mut s_rows, storage) = match tape {
        Some(tape) => {
            tape.prepare(timesteps, n);
            tape.theta = p.theta;
            let storage = tape.storage;
            let rb = storage.row_bytes(n);
            let (m, s) = (&mut tape.membrane[..timesteps * n], &mut tape.spikes[..]);
            (
                split_rows(m, timesteps, n, CHUNK, chunks),
                split_rows(s, timesteps, rb, storage.row_bytes(CHUNK), chunks),
                Some(storage),
            )
        }
        None => (
            empty_rows(chunks * timesteps),
            empty_rows(chunks * timesteps),
            None,
        ),
    };
    type Rows<'a, E> = &'a mut [&'a mut [E]];
    type Task<'a> = (usize, ((Rows<'a, f32>, Rows<'a, f32>), Rows<'a, u8>));
    let body = |(ci, ((o, m), s)): Task| {
        let (lo, hi) = (ci * CHUNK, ((ci + 1) * CHUNK).min(n));
        let src: Vec<&[f32]> = (0..timesteps).map(|r| &x[r * n + lo..r * n + hi]).collect();
        let aff = InputAffine {
            mean: affine.mean,
            scale: affine.scale,
            shift: affine.shift,
            plane,
            first: lo,
        };
        let (src, aff) = (Some(&src[..]), Some(&aff));
        macro_rules! chunk {
            ($format:ty, $tape:literal, $out:literal) => {
                fused::forward_chunk_affine::<$format, $tape, $out>(p, u0, src, aff, o, m, s)
            };
        }
        match (storage, has_out) {
            (None, true) => chunk!(Recompute, false, true),
            (None, false) => unreachable!("checked above"),
            (Some(SpikeStorage::Recompute), true) => chunk!(Recompute, true, true),
            (Some(SpikeStorage::Recompute), false) => chunk!(Recompute, true, false),
            (Some(SpikeStorage::Bits), true) => chunk!(Bits, true, true),
            (Some(SpikeStorage::Bits), false) => chunk!(Bits, true, false),
            (Some(SpikeStorage::Bytes), true) => chunk!(Bytes, true, true),
            (Some(SpikeStorage::Bytes), false) => chunk!(Bytes, true, false),
        }
    };
    let sums: Vec<ForwardSums> = out_rows
        .par_chunks_mut(timesteps)
        .zip(m_rows.par_chunks_mut(timesteps))
        .zip(s_rows.par_chunks_mut(timesteps))
        .enumerate()
        .map(body)
        .collect();
    sums.into_iter()
        .fold(ForwardSums::default(), ForwardSums::add)
}

/// True if [`forward_affine`] takes channel planes of `plane` neurons (a multiple of its 16-lane
/// groups, so that a group never straddles two channels).
pub fn affine_fits(plane: usize) -> bool {
    plane > 0 && plane.is_multiple_of(16)
}

/// Evaluation forward: like [`forward_train`] but nothing is kept.
///
/// # Panics
/// If `timesteps` is 0 or does not divide `io.len()`.
pub fn forward_eval(p: &StepParams, u0: f32, timesteps: usize, io: &mut [f32]) -> ForwardSums {
    let n = neurons(io.len(), timesteps);
    run_forward::<Recompute, false>(p, u0, timesteps, n, io, &mut [], &mut [])
}

/// Backward through time for the forward recorded in `tape` (made with the same `p` and `u0`).
/// `grad` holds ∂L/∂O `[T, N]` on entry and ∂L/∂I on return. `grad_u_last`, if given, is
/// `∂L/∂U[T]` (a loss on the final state, e.g. when state is carried into a following window);
/// `None` means 0, the usual case.
///
/// # Panics
/// If the tape is empty, or `grad` or `grad_u_last` does not match the tape's `T × N`.
pub fn backward(
    p: &StepParams,
    u0: f32,
    tape: &Tape,
    grad: &mut [f32],
    grad_u_last: Option<&[f32]>,
) -> BackwardSums {
    let (t, n) = (tape.timesteps, tape.neurons);
    assert!(t > 0, "lif backward: empty tape");
    assert_eq!(grad.len(), t * n, "lif backward: gradient length");
    assert!(
        grad_u_last.is_none_or(|g| g.len() == n),
        "lif backward: grad_u_last length"
    );
    debug_assert_eq!(
        p.theta.to_bits(),
        tape.theta.to_bits(),
        "θ changed since forward"
    );
    let (m, s) = (tape.membrane(), tape.spike_bytes());
    match tape.storage {
        SpikeStorage::Recompute => run_backward::<Recompute>(p, u0, t, n, m, s, grad, grad_u_last),
        SpikeStorage::Bits => run_backward::<Bits>(p, u0, t, n, m, s, grad, grad_u_last),
        SpikeStorage::Bytes => run_backward::<Bytes>(p, u0, t, n, m, s, grad, grad_u_last),
    }
}

fn neurons(len: usize, timesteps: usize) -> usize {
    assert!(
        timesteps > 0 && len.is_multiple_of(timesteps),
        "lif kernel: {len} values are not T = {timesteps} rows"
    );
    len / timesteps
}

fn chunk_count(n: usize) -> usize {
    n.div_ceil(CHUNK).max(1)
}

/// Splits a `[rows, row_len]` buffer into per-chunk row pieces: entry `c·rows + t` is chunk
/// c's part of row t (`piece` elements per chunk, the last chunk shorter; all empty if
/// `piece` is 0).
fn split_rows<E>(
    mut buf: &mut [E],
    rows: usize,
    row_len: usize,
    piece: usize,
    chunks: usize,
) -> Vec<&mut [E]> {
    let mut out: Vec<&mut [E]> = (0..chunks * rows).map(|_| <&mut [E]>::default()).collect();
    for t in 0..rows {
        let (mut row, rest) = std::mem::take(&mut buf).split_at_mut(row_len);
        buf = rest;
        for c in 0..chunks {
            let take = piece.min(row.len());
            let (a, b) = std::mem::take(&mut row).split_at_mut(take);
            out[c * rows + t] = a;
            row = b;
        }
    }
    out
}

#[allow(clippy::too_many_arguments)]
fn run_forward<F: Format, const TAPE: bool>(
    p: &StepParams,
    u0: f32,
    t: usize,
    n: usize,
    io: &mut [f32],
    m: &mut [f32],
    s: &mut [u8],
) -> ForwardSums {
    let chunks = chunk_count(n);
    let mut io_rows = split_rows(io, t, n, CHUNK, chunks);
    let (mut m_rows, mut s_rows) = if TAPE {
        (
            split_rows(m, t, n, CHUNK, chunks),
            split_rows(s, t, F::row_bytes(n), F::row_bytes(CHUNK), chunks),
        )
    } else {
        (empty_rows(chunks * t), empty_rows(chunks * t))
    };
    type Rows<'a, E> = &'a mut [&'a mut [E]];
    let body = |((io, m), s): ((Rows<f32>, Rows<f32>), Rows<u8>)| {
        fused::forward_chunk::<F, TAPE>(p, u0, io, m, s)
    };
    let sums: Vec<ForwardSums> = if chunks > 1 {
        io_rows
            .par_chunks_mut(t)
            .zip(m_rows.par_chunks_mut(t))
            .zip(s_rows.par_chunks_mut(t))
            .map(body)
            .collect()
    } else {
        vec![body(((&mut io_rows, &mut m_rows), &mut s_rows))]
    };
    sums.into_iter()
        .fold(ForwardSums::default(), ForwardSums::add)
}

fn empty_rows<'a, E>(count: usize) -> Vec<&'a mut [E]> {
    (0..count).map(|_| <&mut [E]>::default()).collect()
}

#[allow(clippy::too_many_arguments)]
fn run_backward<F: Format>(
    p: &StepParams,
    u0: f32,
    t: usize,
    n: usize,
    m: &[f32],
    s: &[u8],
    grad: &mut [f32],
    grad_u_last: Option<&[f32]>,
) -> BackwardSums {
    let chunks = chunk_count(n);
    let mut g_rows = split_rows(grad, t, n, CHUNK, chunks);
    let sb = F::row_bytes(n);
    let body = |(c, g): (usize, &mut [&mut [f32]])| {
        let lo = c * CHUNK;
        let hi = (lo + CHUNK).min(n);
        let (blo, bhi) = (F::row_bytes(lo), F::row_bytes(hi));
        let m_rows: Vec<&[f32]> = (0..t).map(|r| &m[r * n + lo..r * n + hi]).collect();
        let s_rows: Vec<&[u8]> = (0..t).map(|r| &s[r * sb + blo..r * sb + bhi]).collect();
        let g_last = grad_u_last.map(|g| &g[lo..hi]);
        fused::backward_chunk::<F>(p, u0, &m_rows, &s_rows, g, g_last)
    };
    sum_over_chunks(&mut g_rows, t, BackwardSums::add, body)
}

/// Runs `body` on every chunk's `per` rows of `rows` (entry `c·per + r` is chunk c's row r),
/// on rayon when there are several chunks, and adds the results in chunk order, so the sum
/// does not depend on the thread count.
fn sum_over_chunks<E: Send, S: Send + Default>(
    rows: &mut [&mut [E]],
    per: usize,
    add: fn(S, S) -> S,
    body: impl Fn((usize, &mut [&mut [E]])) -> S + Sync + Send,
) -> S {
    let sums: Vec<S> = if rows.len() > per {
        rows.par_chunks_mut(per).enumerate().map(body).collect()
    } else {
        vec![body((0, rows))]
    };
    sums.into_iter().fold(S::default(), add)
}
