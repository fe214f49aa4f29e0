//! Golden checks for the LIF layer (`lif`, `lif_sequence` kinds of `../shared/golden/README.md`).
//!
//! The layer is built from the file's config and θ0, τ0, μ exactly as a model spec would build
//! it (k, w initialised in f32 from θ0, τ0), fed `input` `[T, ...]` as `[T·B, ...]` with B = 1
//! (the same time-major memory), and compared within the file's tolerance. Spikes must match
//! exactly: every output element must be zero exactly where the reference's is.

use super::support::{Check, Golden};
use mpsnn::nn::lif::Lif;
use mpsnn::nn::spec::LifSpec;
use mpsnn::nn::{ForwardCtx, Layer};
use mpsnn::Tensor;

/// The layer for a golden file: `config` holds the `lif` fields, `scalars` θ0, τ0 and μ.
fn build(g: &Golden) -> Result<Lif, String> {
    fn choice<T: serde::de::DeserializeOwned>(g: &Golden, key: &str) -> Result<T, String> {
        let v = g.cfg_str(key)?;
        serde_json::from_value(v.into()).map_err(|e| format!("config.{key} = {v:?}: {e}"))
    }
    let spec = LifSpec {
        surrogate: choice(g, "surrogate")?,
        shape: choice(g, "shape")?,
        gamma: g.cfg_f64("gamma")? as f32,
        reset: choice(g, "reset")?,
        learn_theta: g.cfg_bool("learn_theta")?,
        learn_tau: g.cfg_bool("learn_tau")?,
        mp_init: g.cfg_bool("mp_init")?,
        theta0: g.scalar("theta0")? as f32,
        tau0: g.scalar("tau0")? as f32,
        mu: g.scalar("mu")? as f32,
        ..LifSpec::new("lif")
    };
    Lif::from_spec(&spec).map_err(|e| e.to_string())
}

/// Spike outputs must agree exactly (zero vs non-zero), not just within tolerance.
fn expect_spikes(g: &Golden, name: &str, actual: &Tensor) -> Check {
    let want = g.tensor(name)?;
    for (i, (a, b)) in actual.data().iter().zip(want.data()).enumerate() {
        if (*a != 0.0) != (*b != 0.0) {
            return Err(format!(
                "{name}: spike mismatch at [{i}]: got {a}, expected {b}"
            ));
        }
    }
    g.expect_tensor(name, actual)
}

fn param_grad(lif: &mut Lif, name: &str) -> (f32, bool) {
    let mut found = (f32::NAN, false);
    lif.visit_params(&mut |p| {
        if p.name == name {
            found = (p.grad.data()[0], p.trainable);
        }
    });
    found
}

/// Compares ∂L/∂(raw param); a frozen parameter must have received no gradient at all.
fn expect_param_grad(g: &Golden, lif: &mut Lif, param: &str, scalar: &str) -> Check {
    let (grad, trainable) = param_grad(lif, param);
    if trainable {
        g.expect_scalar(scalar, grad as f64)
    } else if grad == 0.0 {
        Ok(())
    } else {
        Err(format!("{param} is frozen but has gradient {grad}"))
    }
}

pub fn check_lif(g: &Golden) -> Check {
    let t = g.cfg_usize("T")?;
    let mut lif = build(g)?;
    let input = g.tensor("input")?;
    if input.shape().first() != Some(&t) {
        return Err(format!(
            "input shape {:?} does not start with T = {t}",
            input.shape()
        ));
    }
    let out = lif
        .forward(input, &ForwardCtx::train(t))
        .map_err(|e| e.to_string())?;
    expect_spikes(g, "output", &out)?;
    if !g.has("membrane") {
        return Err(format!("{} file without a membrane tensor", g.source));
    }
    g.expect_tensor("membrane", &lif.membrane().map_err(|e| e.to_string())?)?;
    let u_last = lif.last_potential().map_err(|e| e.to_string())?;
    g.expect_data("u_last", u_last.data())?;
    g.expect_scalar("mu_next", lif.mu() as f64)?;

    let grad_in = lif
        .backward(g.tensor("grad_output")?)
        .map_err(|e| e.to_string())?;
    g.expect_tensor("grad_input", &grad_in)?;
    expect_param_grad(g, &mut lif, "lif.k", "grad_k")?;
    expect_param_grad(g, &mut lif, "lif.w", "grad_w")
}

pub fn check_lif_sequence(g: &Golden) -> Check {
    let t = g.cfg_usize("T")?;
    let batches = g.cfg_usize("batches")?;
    let mut lif = build(g)?;
    for i in 0..batches {
        lif.forward(g.tensor(&format!("input_{i}"))?, &ForwardCtx::train(t))
            .map_err(|e| e.to_string())?;
        g.expect_scalar(&format!("mu_after_{i}"), lif.mu() as f64)
            .map_err(|e| format!("batch {i}: {e}"))?;
    }
    let mu = lif.mu();
    let out = lif
        .forward(g.tensor("eval_input")?, &ForwardCtx::eval(t))
        .map_err(|e| e.to_string())?;
    expect_spikes(g, "eval_output", &out)?;
    if lif.mu() != mu {
        return Err(format!("eval changed mu from {mu} to {}", lif.mu()));
    }
    Ok(())
}
