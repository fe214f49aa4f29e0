//! The exporter's intermediate form: the micro runtime's operations with f64 parameters, before
//! quantization and serialization.

use mpsnn_micro::lif::Reset;

/// Where a term reads from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// The (normalized) model input.
    Input,
    /// A spike buffer, by index.
    Buf(usize),
}

/// A term's computation.
#[derive(Clone, Debug, PartialEq)]
pub enum TermKind {
    /// Convolution on the (optionally average-pooled) source; weights `[cout, cin, kh, kw]`.
    Conv {
        /// Kernel height.
        kh: usize,
        /// Kernel width.
        kw: usize,
        /// Stride.
        stride: usize,
        /// Zero padding.
        pad: usize,
        /// Average pool `(kh, kw, sh, sw)` on the source (its `1/(kh·kw)` is in `w`).
        pool: Option<[usize; 4]>,
        /// Input channels.
        cin: usize,
        /// Output channels.
        cout: usize,
        /// Folded weights.
        w: Vec<f64>,
    },
    /// `scale[c] · x[c, y, x]`.
    Identity {
        /// Per-channel scale.
        scale: Vec<f64>,
    },
}

impl TermKind {
    /// Multiplies everything that feeds output channel `c` by `g[c]` (BatchNorm folding).
    pub fn scale_out_channels(&mut self, g: &[f64]) {
        match self {
            TermKind::Conv { w, cout, .. } => {
                let row = w.len() / *cout;
                for (chunk, &gc) in w.chunks_mut(row).zip(g) {
                    chunk.iter_mut().for_each(|v| *v *= gc);
                }
            }
            TermKind::Identity { scale } => scale.iter_mut().zip(g).for_each(|(s, &gc)| *s *= gc),
        }
    }
}

/// One synaptic term.
#[derive(Clone, Debug, PartialEq)]
pub struct Term {
    /// What it reads.
    pub source: Source,
    /// What it computes.
    pub kind: TermKind,
}

/// LIF constants as the runtime stores them (f32, computed like the std layer computes them).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Lif {
    /// `λ = sigmoid(w)`.
    pub lambda: f32,
    /// `1 − λ = sigmoid(−w)`, rounded to f32 on its own as the std layer does.
    pub one_minus_lambda: f32,
    /// `θ = softplus(k)`.
    pub theta: f32,
    /// `U[0]`.
    pub mu: f32,
    /// Reset rule.
    pub reset: Reset,
}

/// One runtime operation.
#[derive(Clone, Debug, PartialEq)]
pub enum Op {
    /// A LIF layer (named after the spec layer).
    Neuron {
        /// Spec name of the LIF layer.
        name: String,
        /// Output buffer.
        out: usize,
        /// Output shape.
        shape: [usize; 3],
        /// Constants.
        lif: Lif,
        /// Folded per-channel bias.
        bias: Vec<f64>,
        /// Terms.
        terms: Vec<Term>,
    },
    /// OR-pooling of spikes.
    MaxPool {
        /// Spec name of the pool layer.
        name: String,
        /// Source buffer.
        src: usize,
        /// Output buffer.
        out: usize,
        /// `[kh, kw, sh, sw, ph, pw]`.
        geom: [usize; 6],
    },
    /// The class scores.
    Readout {
        /// `[classes, 1, 1]`.
        shape: [usize; 3],
        /// Folded bias.
        bias: Vec<f64>,
        /// Terms.
        terms: Vec<Term>,
    },
}

impl Op {
    /// The buffers this op reads.
    pub fn reads(&self) -> Vec<usize> {
        let terms = match self {
            Op::Neuron { terms, .. } | Op::Readout { terms, .. } => terms,
            Op::MaxPool { src, .. } => return vec![*src],
        };
        terms
            .iter()
            .filter_map(|t| match t.source {
                Source::Buf(b) => Some(b),
                Source::Input => None,
            })
            .collect()
    }

    /// The buffer this op writes.
    pub fn writes(&self) -> Option<usize> {
        match self {
            Op::Neuron { out, .. } | Op::MaxPool { out, .. } => Some(*out),
            Op::Readout { .. } => None,
        }
    }
}

/// A compiled network.
#[derive(Clone, Debug, PartialEq)]
pub struct Program {
    /// Timesteps.
    pub timesteps: usize,
    /// Frames (true) or direct encoding.
    pub frames: bool,
    /// Input `[C, H, W]`.
    pub input: [usize; 3],
    /// Classes.
    pub classes: usize,
    /// Shapes of the spike buffers.
    pub buffers: Vec<[usize; 3]>,
    /// Operations in order (the readout last).
    pub ops: Vec<Op>,
    /// Human-readable notes on every fold performed.
    pub foldings: Vec<String>,
}
