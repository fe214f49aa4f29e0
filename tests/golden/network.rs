//! `network` golden files: a whole small SNN, one training step (forward, mean-over-T
//! cross-entropy, backward), compared on logits, loss, every parameter gradient and every μ update.

use super::support::{Check, Golden};
use mpsnn::nn::{ForwardCtx, LayerSpec, ModelSpec, Network, StateDict};
use mpsnn::train::Loss;

pub fn check_network(g: &Golden) -> Check {
    let t = g.cfg_usize("T")?;
    let classes = g.cfg_usize("classes")?;
    if g.cfg_str("encoding")? != "direct" {
        return Err("only direct encoding appears in network files".into());
    }
    let layers: Vec<LayerSpec> = serde_json::from_value(g.config["layers"].clone())
        .map_err(|e| format!("layer specs: {e}"))?;
    let input = g.tensor("input")?;
    let spec = ModelSpec {
        name: "golden".into(),
        input: input.shape()[1..].to_vec(),
        classes,
        encoding: mpsnn::nn::Encoding::Direct,
        layers,
    };
    let mut net = Network::new(spec, 0).map_err(|e| e.to_string())?;

    // Parameters from the file; buffers (BN running stats from 0/1, μ from the spec) as built.
    let mut state: StateDict = net.state_dict();
    for (name, value) in state.iter_mut() {
        if g.has(name) {
            *value = g.tensor(name)?;
        }
    }
    net.load_state_dict(&state).map_err(|e| e.to_string())?;
    let mut missing = Vec::new();
    net.visit_params(&mut |p| {
        if !g.has(&p.name) {
            missing.push(p.name.clone());
        }
    });
    if !missing.is_empty() {
        return Err(format!("file lacks parameters {missing:?}"));
    }

    let labels: Vec<usize> = g.tensors["labels"]
        .data
        .iter()
        .map(|&v| v as usize)
        .collect();
    net.zero_grad();
    let logits = net
        .forward(input, &ForwardCtx::train(t))
        .map_err(|e| e.to_string())?;
    let mean = mpsnn::train::loss::mean_over_time(&logits, t);
    let mean: Vec<f32> = mean.iter().map(|&v| v as f32).collect();
    g.expect_data("logits_mean", &mean)?;
    let out = Loss::MeanCe
        .compute(&logits, &labels, t)
        .map_err(|e| e.to_string())?;
    g.expect_scalar("loss", out.loss as f64)?;
    net.backward(out.grad).map_err(|e| e.to_string())?;

    let mut result: Check = Ok(());
    net.visit_params(&mut |p| {
        if result.is_ok() {
            result = g.expect_tensor(&format!("grad.{}", p.name), &p.grad);
        }
    });
    result.clone()?;
    net.visit_buffers(&mut |b| {
        if result.is_ok() {
            if let Some(lif) = b.name.strip_suffix(".mu") {
                result = g.expect_scalar(&format!("{lif}.mu_next"), b.value.data()[0] as f64);
            }
        }
    });
    result
}
