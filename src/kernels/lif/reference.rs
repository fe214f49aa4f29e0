//! The scalar reference of the fused kernels: one neuron at a time, the time loop inside, built
//! from the same pure step functions on `f32`. Slow and allocating; for tests and as the
//! definition the vector kernels are checked against.

use super::{BackwardSums, ForwardSums};
use crate::neuron::step::{reset, step, step_backward, StepParams};

/// Everything a reference forward produces, `[T, N]` time-major unless noted.
#[derive(Clone, Debug, PartialEq)]
pub struct ReferenceForward {
    /// O.
    pub output: Vec<f32>,
    /// M.
    pub membrane: Vec<f32>,
    /// S.
    pub spikes: Vec<bool>,
    /// `U[T]`, `[N]`.
    pub u_last: Vec<f32>,
    /// Spike count, active count, Σ `U[T]` over active neurons (summed in neuron order).
    pub sums: ForwardSums,
}

/// Forward over `input` (`[T, N]`, time-major) from `U[0]` = `u0`.
///
/// # Panics
/// If `timesteps` is 0 or does not divide `input.len()`.
pub fn forward_reference(
    p: &StepParams,
    u0: f32,
    timesteps: usize,
    input: &[f32],
) -> ReferenceForward {
    let n = super::neurons(input.len(), timesteps);
    let mut r = ReferenceForward {
        output: vec![0.0; input.len()],
        membrane: vec![0.0; input.len()],
        spikes: vec![false; input.len()],
        u_last: vec![0.0; n],
        sums: ForwardSums::default(),
    };
    for j in 0..n {
        let (mut u, mut any) = (u0, false);
        for t in 0..timesteps {
            let k = t * n + j;
            let out = step(p, u, input[k]);
            (r.output[k], r.membrane[k], r.spikes[k]) = (out.o, out.m, out.s);
            r.sums.spikes += out.s as u64;
            any |= out.s;
            u = out.u;
        }
        r.u_last[j] = u;
        if any {
            r.sums.active += 1;
            r.sums.sum_u_active += u as f64;
        }
    }
    r
}

/// Backward for a reference forward: `membrane`, `spikes` as returned by it, `grad_output`
/// ∂L/∂O `[T, N]`, optional `∂L/∂U[T]`. Returns ∂L/∂I and the parameter sums (neuron order).
///
/// # Panics
/// If the lengths are inconsistent.
pub fn backward_reference(
    p: &StepParams,
    u0: f32,
    timesteps: usize,
    membrane: &[f32],
    spikes: &[bool],
    grad_output: &[f32],
    grad_u_last: Option<&[f32]>,
) -> (Vec<f32>, BackwardSums) {
    let n = super::neurons(membrane.len(), timesteps);
    assert!(spikes.len() == membrane.len() && grad_output.len() == membrane.len());
    let mut g_in = vec![0.0; membrane.len()];
    let mut sums = BackwardSums::default();
    for j in 0..n {
        let mut g_u = grad_u_last.map_or(0.0, |g| g[j]);
        let (mut g_th, mut g_dec) = (0f32, 0f32);
        for t in (0..timesteps).rev() {
            let k = t * n + j;
            let u_prev = if t > 0 {
                reset(p, membrane[k - n], spikes[k - n])
            } else {
                u0
            };
            let gr = step_backward(p, u_prev, membrane[k], spikes[k], grad_output[k], g_u);
            g_in[k] = gr.g_i;
            g_th += gr.g_theta;
            g_dec += gr.g_decay;
            g_u = gr.g_u_prev;
        }
        sums.g_theta += g_th as f64;
        sums.g_decay += g_dec as f64;
    }
    (g_in, sums)
}
