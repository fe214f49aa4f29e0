//! Golden checks for the stateless layers: conv2d, linear, batchnorm2d, max/avg pooling.
//!
//! Each check builds the layer from a spec made of the file's `config`, loads the file's
//! parameters, runs forward (train or eval as the file says) and backward with `grad_y`, and
//! compares every output against PyTorch autograd (`source: autograd`).

use super::support::{Check, Golden};
use mpsnn::nn::batchnorm::BatchNorm2d;
use mpsnn::nn::build::init_rng;
use mpsnn::nn::conv::Conv2d;
use mpsnn::nn::linear::Linear;
use mpsnn::nn::pool::{AvgPool2d, GlobalAvgPool2d, MaxPool2d};
use mpsnn::nn::spec::{BatchNorm2dSpec, Conv2dSpec, LinearSpec, PoolSpec};
use mpsnn::nn::{ForwardCtx, Layer};
use mpsnn::Tensor;

const NAME: &str = "golden";

fn e2s(e: mpsnn::Error) -> String {
    e.to_string()
}

/// Replaces parameter `<NAME>.<param>` (zeroing its gradient) or buffer of that name.
fn load(layer: &mut dyn Layer, param: &str, value: Tensor) -> Check {
    let full = format!("{NAME}.{param}");
    let mut found = false;
    let mut err = None;
    let mut put = |name: &str, dst: &mut Tensor| {
        if name == full {
            found = true;
            if dst.shape() != value.shape() {
                err = Some(format!(
                    "{full}: shape {:?} vs file {:?}",
                    dst.shape(),
                    value.shape()
                ));
            } else {
                *dst = value.clone();
            }
        }
    };
    layer.visit_params(&mut |p| {
        let name = p.name.clone();
        put(&name, &mut p.value);
        p.grad.fill_zero();
    });
    layer.visit_buffers(&mut |b| {
        let name = b.name.clone();
        put(&name, &mut b.value);
    });
    match (found, err) {
        (_, Some(e)) => Err(e),
        (false, _) => Err(format!("layer has no parameter or buffer {full}")),
        (true, None) => Ok(()),
    }
}

/// The gradient of parameter `<NAME>.<param>`, or the buffer `<NAME>.<param>`.
fn read(layer: &mut dyn Layer, param: &str, grad: bool) -> Result<Tensor, String> {
    let full = format!("{NAME}.{param}");
    let mut out = None;
    layer.visit_params(&mut |p| {
        if p.name == full {
            out = Some(if grad {
                p.grad.clone()
            } else {
                p.value.clone()
            });
        }
    });
    layer.visit_buffers(&mut |b| {
        if b.name == full {
            out = Some(b.value.clone());
        }
    });
    out.ok_or_else(|| format!("layer has no {full}"))
}

/// Forward in `ctx`, compare `y`; backward with `grad_y`, compare `grad_x`.
fn run(g: &Golden, layer: &mut dyn Layer, ctx: &ForwardCtx) -> Check {
    let y = layer.forward(g.tensor("x")?, ctx).map_err(e2s)?;
    g.expect_tensor("y", &y)?;
    let dx = layer.backward(g.tensor("grad_y")?).map_err(e2s)?;
    g.expect_tensor("grad_x", &dx)
}

/// The eval-mode forward must give the same `y` (stateless layers) and cache nothing.
fn eval_matches(g: &Golden, layer: &mut dyn Layer) -> Check {
    let y = layer
        .forward(g.tensor("x")?, &ForwardCtx::eval(1))
        .map_err(e2s)?;
    g.expect_tensor("y", &y)?;
    match layer.backward(g.tensor("grad_y")?) {
        Err(mpsnn::Error::NoForwardCache { .. }) => Ok(()),
        other => Err(format!("backward after an eval forward gave {other:?}")),
    }
}

pub fn check_conv2d(g: &Golden) -> Check {
    let spec = Conv2dSpec {
        name: NAME.into(),
        in_channels: g.cfg_usize("in_channels")?,
        out_channels: g.cfg_usize("out_channels")?,
        kernel: g.cfg_usize("kernel")?,
        stride: g.cfg_usize("stride")?,
        padding: g.cfg_usize("padding")?,
        bias: g.cfg_bool("bias")?,
    };
    let mut layer = Conv2d::from_spec(&spec, &mut init_rng(0)).map_err(e2s)?;
    load(&mut layer, "weight", g.tensor("weight")?)?;
    if spec.bias {
        load(&mut layer, "bias", g.tensor("bias")?)?;
    }
    run(g, &mut layer, &ForwardCtx::train(1))?;
    g.expect_tensor("grad_weight", &read(&mut layer, "weight", true)?)?;
    if spec.bias {
        g.expect_tensor("grad_bias", &read(&mut layer, "bias", true)?)?;
    }
    eval_matches(g, &mut layer)
}

pub fn check_linear(g: &Golden) -> Check {
    let w = g.tensor("weight")?;
    let spec = LinearSpec {
        name: NAME.into(),
        in_features: w.shape()[1],
        out_features: w.shape()[0],
        bias: g.has("bias"),
    };
    let mut layer = Linear::from_spec(&spec, &mut init_rng(0)).map_err(e2s)?;
    load(&mut layer, "weight", w)?;
    if spec.bias {
        load(&mut layer, "bias", g.tensor("bias")?)?;
    }
    run(g, &mut layer, &ForwardCtx::train(1))?;
    g.expect_tensor("grad_weight", &read(&mut layer, "weight", true)?)?;
    if spec.bias {
        g.expect_tensor("grad_bias", &read(&mut layer, "bias", true)?)?;
    }
    eval_matches(g, &mut layer)
}

pub fn check_batchnorm2d(g: &Golden) -> Check {
    let spec = BatchNorm2dSpec {
        name: NAME.into(),
        num_features: g.tensor("gamma")?.len(),
        eps: g.cfg_f64("eps")? as f32,
        momentum: g.cfg_f64("momentum")? as f32,
        training: None,
    };
    let mut layer = BatchNorm2d::from_spec(&spec).map_err(e2s)?;
    for (param, file) in [
        ("gamma", "gamma"),
        ("beta", "beta"),
        ("running_mean", "running_mean"),
        ("running_var", "running_var"),
    ] {
        load(&mut layer, param, g.tensor(file)?)?;
    }
    if g.cfg_bool("training")? {
        run(g, &mut layer, &ForwardCtx::train(1))?;
    } else {
        // Eval forward: running statistics, untouched by the pass.
        let y = layer
            .forward(g.tensor("x")?, &ForwardCtx::eval(1))
            .map_err(e2s)?;
        g.expect_tensor("y", &y)?;
        // The file's gradient is the eval-mode one (statistics constant): frozen statistics.
        layer.set_frozen_stats(true);
        run(g, &mut layer, &ForwardCtx::train(1))?;
    }
    g.expect_tensor("running_mean_after", layer.running_mean())?;
    g.expect_tensor("running_var_after", layer.running_var())?;
    g.expect_tensor("grad_gamma", &read(&mut layer, "gamma", true)?)?;
    g.expect_tensor("grad_beta", &read(&mut layer, "beta", true)?)
}

fn pool_spec(g: &Golden) -> Result<PoolSpec, String> {
    Ok(PoolSpec {
        name: NAME.into(),
        kernel: g.cfg_usize("kernel")?,
        stride: Some(g.cfg_usize("stride")?),
        padding: g.cfg_usize("padding")?,
    })
}

pub fn check_maxpool2d(g: &Golden) -> Check {
    let mut layer = MaxPool2d::from_spec(&pool_spec(g)?).map_err(e2s)?;
    run(g, &mut layer, &ForwardCtx::train(1))?;
    eval_matches(g, &mut layer)
}

pub fn check_avgpool2d(g: &Golden) -> Check {
    let spec = pool_spec(g)?;
    let mut layer = AvgPool2d::from_spec(&spec).map_err(e2s)?;
    run(g, &mut layer, &ForwardCtx::train(1))?;
    eval_matches(g, &mut layer)?;
    // A window covering the whole plane is a global average pool: check that layer too.
    let x = g.tensor("x")?;
    if x.shape()[2..] == [spec.kernel, spec.kernel] && spec.stride() == spec.kernel {
        run(g, &mut GlobalAvgPool2d::new(NAME), &ForwardCtx::train(1))?;
    }
    Ok(())
}
