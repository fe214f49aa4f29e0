//! Max and average pooling over `[planes, H, W]` (`planes = N·C`), floor mode (PyTorch
//! `ceil_mode = false`): trailing rows/columns that do not fill a window are dropped.
//!
//! Max pooling pads with implicit `−∞` and follows PyTorch's selection rule exactly: scanning
//! the in-bounds window elements in row-major order, an element replaces the current maximum
//! if it is strictly greater or NaN. Ties therefore send the gradient to the **first** maximal
//! element — the common case after a LIF layer, whose outputs are all `0` or `θ`.
//! Average pooling supports padding 0 only (what the models use).
//!
//! Planes are independent tasks: results do not depend on the thread count.

use rayon::prelude::*;

/// Output elements per parallel task, so tiny planes are batched together.
const MIN_TASK: usize = 16 * 1024;

/// The geometry of one pooling call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolGeom {
    /// Independent planes (`N·C`).
    pub planes: usize,
    /// Input height.
    pub h: usize,
    /// Input width.
    pub w: usize,
    /// Window size (square).
    pub k: usize,
    /// Stride.
    pub stride: usize,
    /// Implicit padding on each side.
    pub pad: usize,
    /// Output height `(h + 2·pad − k) / stride + 1`.
    pub oh: usize,
    /// Output width.
    pub ow: usize,
}

impl PoolGeom {
    /// The geometry, or `None` if a size, `k` or `stride` is 0, `pad > k/2` (PyTorch's limit, which
    /// guarantees every window holds an input element) or the window does not fit the padded
    /// input.
    pub fn new(
        planes: usize,
        h: usize,
        w: usize,
        k: usize,
        stride: usize,
        pad: usize,
    ) -> Option<Self> {
        if h == 0
            || w == 0
            || k == 0
            || stride == 0
            || 2 * pad > k
            || h + 2 * pad < k
            || w + 2 * pad < k
        {
            return None;
        }
        Some(PoolGeom {
            planes,
            h,
            w,
            k,
            stride,
            pad,
            oh: (h + 2 * pad - k) / stride + 1,
            ow: (w + 2 * pad - k) / stride + 1,
        })
    }

    /// Elements of one input plane.
    pub fn in_plane(&self) -> usize {
        self.h * self.w
    }

    /// Elements of one output plane.
    pub fn out_plane(&self) -> usize {
        self.oh * self.ow
    }

    /// In-bounds input range `[lo, hi)` of output index `o` along an axis of length `len`.
    fn span(&self, o: usize, len: usize) -> (usize, usize) {
        let start = o * self.stride;
        let lo = start.saturating_sub(self.pad);
        let hi = (start + self.k).saturating_sub(self.pad).min(len);
        (lo, hi)
    }

    fn planes_per_task(&self) -> usize {
        MIN_TASK.div_ceil(self.out_plane().max(1))
    }

    fn check(&self, x: usize, y: usize, what: &str) {
        assert!(
            x == self.planes * self.in_plane() && y == self.planes * self.out_plane(),
            "pool {what}: slice lengths do not match {self:?}"
        );
    }
}

/// Max pooling: `y` (overwritten) gets each window's maximum; `argmax`, if given, the index of
/// the selected element within its input plane (PyTorch's rule, see the module docs).
///
/// # Panics
/// If a slice length disagrees with `g`, or a plane has more than `u32::MAX` elements.
pub fn max_forward(g: &PoolGeom, x: &[f32], y: &mut [f32], argmax: Option<&mut [u32]>) {
    g.check(x.len(), y.len(), "max_forward");
    assert!(u32::try_from(g.in_plane()).is_ok(), "pool plane too large");
    if g.planes == 0 {
        return;
    }
    let per = g.planes_per_task();
    let (ip, op) = (g.in_plane(), g.out_plane());
    let run = |xc: &[f32], yc: &mut [f32], mut ac: Option<&mut [u32]>| {
        for (p, (xp, yp)) in xc.chunks_exact(ip).zip(yc.chunks_exact_mut(op)).enumerate() {
            let ap = ac.as_deref_mut().map(|a| &mut a[p * op..(p + 1) * op]);
            max_plane(g, xp, yp, ap);
        }
    };
    match argmax {
        Some(a) => {
            assert_eq!(a.len(), y.len(), "pool max_forward: argmax length");
            x.par_chunks(per * ip)
                .zip(y.par_chunks_mut(per * op))
                .zip(a.par_chunks_mut(per * op))
                .for_each(|((xc, yc), ac)| run(xc, yc, Some(ac)));
        }
        None => x
            .par_chunks(per * ip)
            .zip(y.par_chunks_mut(per * op))
            .for_each(|(xc, yc)| run(xc, yc, None)),
    }
}

/// Max pooling of one plane (`g.planes` is ignored): `y` gets each window's maximum, `arg`,
/// if given, the selected input index (the rule of [`max_forward`]).
pub(crate) fn max_plane(g: &PoolGeom, x: &[f32], y: &mut [f32], mut arg: Option<&mut [u32]>) {
    if g.k == 2 && g.stride == 2 && g.pad == 0 {
        // The VGG/MNIST case: no bounds to clip, four loads per output.
        for oy in 0..g.oh {
            let r0 = &x[2 * oy * g.w..][..g.w];
            let r1 = &x[(2 * oy + 1) * g.w..][..g.w];
            for ox in 0..g.ow {
                let i = 2 * ox;
                let mut best = r0[i];
                let mut at = 2 * oy * g.w + i;
                for (v, idx) in [
                    (r0[i + 1], at + 1),
                    (r1[i], at + g.w),
                    (r1[i + 1], at + g.w + 1),
                ] {
                    if v > best || v.is_nan() {
                        best = v;
                        at = idx;
                    }
                }
                y[oy * g.ow + ox] = best;
                if let Some(a) = arg.as_deref_mut() {
                    a[oy * g.ow + ox] = at as u32;
                }
            }
        }
        return;
    }
    for oy in 0..g.oh {
        let (y0, y1) = g.span(oy, g.h);
        for ox in 0..g.ow {
            let (x0, x1) = g.span(ox, g.w);
            let mut best = f32::NEG_INFINITY;
            let mut at = y0 * g.w + x0;
            for iy in y0..y1 {
                for (ix, &v) in x[iy * g.w..][x0..x1].iter().enumerate() {
                    if v > best || v.is_nan() {
                        best = v;
                        at = iy * g.w + x0 + ix;
                    }
                }
            }
            y[oy * g.ow + ox] = best;
            if let Some(a) = arg.as_deref_mut() {
                a[oy * g.ow + ox] = at as u32;
            }
        }
    }
}

/// Max-pool backward: `dx` (overwritten) gets `dy` routed to the `argmax` element of each
/// window (summed where overlapping windows select the same element).
///
/// # Panics
/// If a slice length disagrees with `g` or an `argmax` entry is outside its plane.
pub fn max_backward(g: &PoolGeom, dy: &[f32], argmax: &[u32], dx: &mut [f32]) {
    g.check(dx.len(), dy.len(), "max_backward");
    assert_eq!(argmax.len(), dy.len(), "pool max_backward: argmax length");
    if g.planes == 0 {
        return;
    }
    let per = g.planes_per_task();
    let (ip, op) = (g.in_plane(), g.out_plane());
    dx.par_chunks_mut(per * ip)
        .zip(dy.par_chunks(per * op))
        .zip(argmax.par_chunks(per * op))
        .for_each(|((dxc, dyc), ac)| {
            for ((dxp, dyp), ap) in dxc
                .chunks_exact_mut(ip)
                .zip(dyc.chunks_exact(op))
                .zip(ac.chunks_exact(op))
            {
                // Zeroing plane by plane keeps it in L1 for the scatter: one pass over dx.
                dxp.fill(0.0);
                for (&d, &a) in dyp.iter().zip(ap) {
                    dxp[a as usize] += d;
                }
            }
        });
}

fn check_avg(g: &PoolGeom) {
    assert_eq!(g.pad, 0, "average pooling supports padding 0 only");
}

/// Average pooling (padding 0): `y` (overwritten) gets each `k×k` window's mean.
///
/// # Panics
/// If a slice length disagrees with `g` or `g.pad != 0`.
pub fn avg_forward(g: &PoolGeom, x: &[f32], y: &mut [f32]) {
    g.check(x.len(), y.len(), "avg_forward");
    check_avg(g);
    if g.planes == 0 {
        return;
    }
    let per = g.planes_per_task();
    let (ip, op) = (g.in_plane(), g.out_plane());
    let inv = 1.0 / (g.k * g.k) as f32;
    x.par_chunks(per * ip)
        .zip(y.par_chunks_mut(per * op))
        .for_each(|(xc, yc)| {
            for (xp, yp) in xc.chunks_exact(ip).zip(yc.chunks_exact_mut(op)) {
                for oy in 0..g.oh {
                    for ox in 0..g.ow {
                        let mut s = 0.0f32;
                        for iy in oy * g.stride..oy * g.stride + g.k {
                            let row = &xp[iy * g.w + ox * g.stride..][..g.k];
                            s += row.iter().sum::<f32>();
                        }
                        yp[oy * g.ow + ox] = s * inv;
                    }
                }
            }
        });
}

/// Average-pool backward (padding 0): `dx` (overwritten) gets `dy/k²` spread over each window.
///
/// # Panics
/// If a slice length disagrees with `g` or `g.pad != 0`.
pub fn avg_backward(g: &PoolGeom, dy: &[f32], dx: &mut [f32]) {
    g.check(dx.len(), dy.len(), "avg_backward");
    check_avg(g);
    if g.planes == 0 {
        return;
    }
    let per = g.planes_per_task();
    let (ip, op) = (g.in_plane(), g.out_plane());
    let inv = 1.0 / (g.k * g.k) as f32;
    dx.par_chunks_mut(per * ip)
        .zip(dy.par_chunks(per * op))
        .for_each(|(dxc, dyc)| {
            for (dxp, dyp) in dxc.chunks_exact_mut(ip).zip(dyc.chunks_exact(op)) {
                dxp.fill(0.0);
                for oy in 0..g.oh {
                    for ox in 0..g.ow {
                        let v = dyp[oy * g.ow + ox] * inv;
                        for iy in oy * g.stride..oy * g.stride + g.k {
                            for d in &mut dxp[iy * g.w + ox * g.stride..][..g.k] {
                                *d += v;
                            }
                        }
                    }
                }
            }
        });
}

/// Global average pooling: `y[p] = mean(x[p, ..])` over each plane of `hw` elements.
///
/// # Panics
/// If `x.len() != y.len()·hw` or `hw == 0`.
pub fn global_avg_forward(x: &[f32], hw: usize, y: &mut [f32]) {
    assert!(
        hw > 0 && x.len() == y.len() * hw,
        "global_avg_forward: lengths"
    );
    y.par_iter_mut()
        .zip(x.par_chunks(hw))
        .with_min_len(MIN_TASK.div_ceil(hw))
        .for_each(|(o, xp)| *o = super::elementwise::sum(xp) / hw as f32);
}

/// Global average pooling backward: `dx[p, i] = dy[p] / hw` (`dx` overwritten).
///
/// # Panics
/// If `dx.len() != dy.len()·hw` or `hw == 0`.
pub fn global_avg_backward(dy: &[f32], hw: usize, dx: &mut [f32]) {
    assert!(
        hw > 0 && dx.len() == dy.len() * hw,
        "global_avg_backward: lengths"
    );
    dx.par_chunks_mut(hw)
        .zip(dy.par_iter())
        .with_min_len(MIN_TASK.div_ceil(hw))
        .for_each(|(dp, &d)| dp.fill(d / hw as f32));
}

#[cfg(test)]
#[path = "pool_tests.rs"]
mod tests;
