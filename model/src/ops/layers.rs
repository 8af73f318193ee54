//! Linear, LayerNorm, softmax and GELU as single graph nodes.
//!
//! Each op computes its forward with the CPU kernels (or candle's fused kernels on other
//! devices) and attaches a backward that is one pass over the data on the CPU (and a short
//! tensor-op formula on other devices). How: a `CustomOp` whose forward hands back a result
//! computed beforehand with detached tensors (one copy), so the same code serves every backend.

use super::{cpu_f32, with_f32, Result};
use crate::grads::GradSink;
use crate::kernels::softmax_backward_row;
use candle_core::{
    CpuStorage, CudaStorage, CustomOp1, CustomOp3, DType, Layout, Shape, Storage, Tensor, D,
};
use rayon::prelude::*;
use std::sync::Mutex;

/// A forward result computed ahead of time, handed to candle through a custom op.
struct Precomputed(Mutex<Option<Tensor>>);

impl Precomputed {
    fn new(t: Tensor) -> Result<Self> {
        // The storage is handed over whole, so it must hold exactly this tensor.
        let t = if t.is_contiguous() && t.layout().start_offset() == 0 {
            t
        } else {
            t.copy()?
        };
        Ok(Self(Mutex::new(Some(t))))
    }
    fn take(&self) -> Result<Tensor> {
        self.0
            .lock()
            .map_err(|_| candle_core::Error::Msg("poisoned forward cache".into()))?
            .take()
            .ok_or_else(|| candle_core::Error::Msg("fused op forward ran twice".into()))
    }
    fn cpu(&self) -> Result<(CpuStorage, Shape)> {
        let t = self.take()?;
        let (s, l) = t.storage_and_layout();
        match s.try_clone(l)? {
            Storage::Cpu(c) => Ok((c, l.shape().clone())),
            _ => candle_core::bail!("fused op: forward result is not on the CPU"),
        }
    }
    fn cuda(&self) -> Result<(CudaStorage, Shape)> {
        let t = self.take()?;
        let (s, l) = t.storage_and_layout();
        match s.try_clone(l)? {
            Storage::Cuda(c) => Ok((c, l.shape().clone())),
            _ => candle_core::bail!("fused op: forward result is not on the GPU"),
        }
    }
}

/// The forward methods of a custom op whose result was computed beforehand (field `$f`).
macro_rules! precomputed_forward {
    (1, $f:tt) => {
        fn cpu_fwd(&self, _: &CpuStorage, _: &Layout) -> Result<(CpuStorage, Shape)> {
            self.$f.cpu()
        }
        fn cuda_fwd(&self, _: &CudaStorage, _: &Layout) -> Result<(CudaStorage, Shape)> {
            self.$f.cuda()
        }
    };
    (3, $f:tt) => {
        fn cpu_fwd(
            &self,
            _: &CpuStorage,
            _: &Layout,
            _: &CpuStorage,
            _: &Layout,
            _: &CpuStorage,
            _: &Layout,
        ) -> Result<(CpuStorage, Shape)> {
            self.$f.cpu()
        }
        fn cuda_fwd(
            &self,
            _: &CudaStorage,
            _: &Layout,
            _: &CudaStorage,
            _: &Layout,
            _: &CudaStorage,
            _: &Layout,
        ) -> Result<(CudaStorage, Shape)> {
            self.$f.cuda()
        }
    };
}

// Linear: y = x W^T + b for 2-D x.

struct LinearOp {
    out: Precomputed,
    /// The training forward's, when there is one: whether the backward pass wants weight and
    /// bias gradients (without one, it always does).
    sink: Option<GradSink>,
}

impl CustomOp3 for LinearOp {
    fn name(&self) -> &'static str {
        "fused-linear"
    }
    precomputed_forward!(3, out);
    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        b: &Tensor,
        _res: &Tensor,
        g: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (k, o) = (x.dim(D::Minus1)?, w.dim(0)?);
        let x2 = x.detach().reshape(((), k))?;
        let g2 = g.detach().reshape(((), o))?;
        let w_d = w.detach();
        let dx = g2.matmul(&w_d)?.reshape(x.shape())?;
        // Leaves may go without a gradient; a derived weight (the reshaped patch kernel) must
        // get one, since candle expects every intermediate node to receive its gradient.
        let skip = self.sink.as_ref().is_some_and(|s| !s.params_wanted());
        let dw = if skip && w.is_variable() {
            None
        } else {
            Some(g2.t()?.matmul(&x2)?)
        };
        let db = if skip && b.is_variable() {
            None
        } else {
            Some(sum_rows(&g2)?)
        };
        Ok((Some(dx), dw, db))
    }
}

/// Column sums of a (rows, cols) matrix. candle's reduction over the leading dimension walks
/// the matrix with a stride and was a tenth of a training step; on the CPU this sums rows in
/// parallel blocks instead.
pub fn sum_rows(g: &Tensor) -> Result<Tensor> {
    if !cpu_f32(g) || g.rank() != 2 {
        return g.sum(0);
    }
    let (_, cols) = g.dims2()?;
    let sums = with_f32(g, |gs| crate::kernels::column_sums(gs, cols))?;
    Tensor::from_vec(sums, cols, g.device())
}

/// `x W^T + b` over the last dimension of x (any rank), W (out, in), b (out); one node in the
/// graph, so no reshapes around it.
pub fn linear(x: &Tensor, w: &Tensor, b: &Tensor) -> Result<Tensor> {
    linear_in(x, w, b, None)
}

/// [`linear`] inside a training forward whose `sink` says whether a backward pass wants the
/// weight and bias gradients.
pub(crate) fn linear_in(
    x: &Tensor,
    w: &Tensor,
    b: &Tensor,
    sink: Option<&GradSink>,
) -> Result<Tensor> {
    let y = linear_value(x, w, Some(b), None)?;
    x.apply_op3(
        w,
        b,
        LinearOp {
            out: Precomputed::new(y)?,
            sink: sink.cloned(),
        },
    )
}

/// The value of `x Wᵀ (+ b) (+ residual)` over the last dimension of x, with no graph: one
/// GEMM that accumulates onto the bias and residual on the CPU, composed tensor ops elsewhere.
pub fn linear_value(
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    residual: Option<&Tensor>,
) -> Result<Tensor> {
    let k = x.dim(D::Minus1)?;
    let n = w.dim(0)?;
    let mut out_shape = x.dims().to_vec();
    *out_shape.last_mut().expect("rank >= 1") = n;
    if let Some(r) = residual {
        if r.dims() != out_shape.as_slice() {
            candle_core::bail!("linear: residual {:?} is not {:?}", r.dims(), out_shape);
        }
    }
    let all_cpu = cpu_f32(x) && cpu_f32(w) && b.is_none_or(cpu_f32) && residual.is_none_or(cpu_f32);
    if all_cpu && w.dim(1)? == k && b.is_none_or(|b| b.dims() == [n]) {
        let m = x.elem_count() / k;
        // Optional operands read in place (no copies): a missing one is an empty tensor.
        let none = Tensor::zeros(0, DType::F32, x.device())?;
        let y = with_f32(x, |xs| {
            with_f32(w, |ws| {
                with_f32(b.unwrap_or(&none), |bs| {
                    with_f32(residual.unwrap_or(&none), |rs| {
                        crate::kernels::linear_forward(
                            xs,
                            ws,
                            b.is_some().then_some(bs),
                            residual.is_some().then_some(rs),
                            m,
                            k,
                            n,
                        )
                    })
                })
            })
        })????;
        return Tensor::from_vec(y, out_shape, x.device());
    }
    let mut y = x.detach().reshape(((), k))?.matmul(&w.detach().t()?)?;
    if let Some(b) = b {
        y = y.broadcast_add(&b.detach())?;
    }
    let y = y.reshape(out_shape)?;
    match residual {
        Some(r) => y + r.detach(),
        None => Ok(y),
    }
}

// LayerNorm over the last dimension.

struct LayerNormOp {
    out: Precomputed,
    eps: f32,
}

impl CustomOp3 for LayerNormOp {
    fn name(&self) -> &'static str {
        "fused-layer-norm"
    }
    precomputed_forward!(3, out);
    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _b: &Tensor,
        _res: &Tensor,
        g: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (x, w, g) = (x.detach(), w.detach(), g.detach());
        let d = x.dim(D::Minus1)?;
        if cpu_f32(&x) && cpu_f32(&g) && cpu_f32(&w) {
            let (dx, p) = with_f32(&x, |xs| {
                with_f32(&g, |gs| {
                    with_f32(&w, |ws| {
                        crate::kernels::layer_norm_backward(xs, ws, gs, self.eps, true)
                    })
                })
            })???;
            let (dw, db) = p.expect("parameter gradients were asked for");
            let dev = x.device();
            return Ok((
                Some(Tensor::from_vec(dx, x.shape(), dev)?),
                Some(Tensor::from_vec(dw, d, dev)?),
                Some(Tensor::from_vec(db, d, dev)?),
            ));
        }
        // Other devices: the same formula with tensor ops.
        let mean = x.mean_keepdim(D::Minus1)?;
        let xc = x.broadcast_sub(&mean)?;
        let rstd = (xc.sqr()?.mean_keepdim(D::Minus1)? + self.eps as f64)?
            .sqrt()?
            .recip()?;
        let xhat = xc.broadcast_mul(&rstd)?;
        let gy = g.broadcast_mul(&w)?;
        let m1 = gy.mean_keepdim(D::Minus1)?;
        let m2 = (&gy * &xhat)?.mean_keepdim(D::Minus1)?;
        let dx = gy
            .broadcast_sub(&m1)?
            .sub(&xhat.broadcast_mul(&m2)?)?
            .broadcast_mul(&rstd)?;
        let flat = |t: &Tensor| t.reshape(((), d));
        let dw = flat(&(&g * &xhat)?)?.sum(0)?;
        let db = flat(&g)?.sum(0)?;
        Ok((Some(dx), Some(dw), Some(db)))
    }
}

/// LayerNorm over the last dimension with affine weight and bias.
pub fn layer_norm(x: &Tensor, w: &Tensor, b: &Tensor, eps: f32) -> Result<Tensor> {
    let y = layer_norm_value(x, w, b, eps)?;
    x.apply_op3(
        w,
        b,
        LayerNormOp {
            out: Precomputed::new(y)?,
            eps,
        },
    )
}

/// The value of a LayerNorm over the last dimension, with no graph.
pub fn layer_norm_value(x: &Tensor, w: &Tensor, b: &Tensor, eps: f32) -> Result<Tensor> {
    if cpu_f32(x) && cpu_f32(w) && cpu_f32(b) && w.dims1()? == x.dim(D::Minus1)? {
        let y = with_f32(x, |xs| {
            with_f32(w, |ws| {
                with_f32(b, |bs| crate::kernels::layer_norm_forward(xs, ws, bs, eps))
            })
        })???;
        return Tensor::from_vec(y, x.shape(), x.device());
    }
    candle_nn::ops::layer_norm(&x.detach().contiguous()?, &w.detach(), &b.detach(), eps)
}

// Softmax over the last dimension.

struct SoftmaxOp(Precomputed);

impl CustomOp1 for SoftmaxOp {
    fn name(&self) -> &'static str {
        "fused-softmax"
    }
    precomputed_forward!(1, 0);
    fn bwd(&self, _x: &Tensor, y: &Tensor, g: &Tensor) -> Result<Option<Tensor>> {
        let (y, g) = (y.detach(), g.detach());
        if cpu_f32(&y) && cpu_f32(&g) {
            let n = y.dim(D::Minus1)?;
            let mut dx = vec![0f32; y.elem_count()];
            with_f32(&y, |ys| {
                with_f32(&g, |gs| {
                    dx.par_chunks_mut(n * 64).enumerate().for_each(|(ci, dxc)| {
                        for (ri, dxr) in dxc.chunks_mut(n).enumerate() {
                            let o = (ci * 64 + ri) * n;
                            softmax_backward_row(&ys[o..o + n], &gs[o..o + n], dxr);
                        }
                    })
                })
            })??;
            return Ok(Some(Tensor::from_vec(dx, y.shape(), y.device())?));
        }
        let s = (&y * &g)?.sum_keepdim(D::Minus1)?;
        Ok(Some((g.broadcast_sub(&s)? * y)?))
    }
}

/// Softmax over the last dimension.
pub fn softmax(x: &Tensor) -> Result<Tensor> {
    let y = softmax_value(x)?;
    x.apply_op1(SoftmaxOp(Precomputed::new(y)?))
}

/// The value of a softmax over the last dimension, with no graph.
pub fn softmax_value(x: &Tensor) -> Result<Tensor> {
    if cpu_f32(x) {
        let n = x.dim(D::Minus1)?;
        let mut y = with_f32(x, |xs| xs.to_vec())?;
        y.par_chunks_mut(n * 64)
            .for_each(|rows| crate::kernels::softmax_rows(rows, n));
        return Tensor::from_vec(y, x.shape(), x.device());
    }
    candle_nn::ops::softmax_last_dim(&x.detach().contiguous()?)
}

// Exact (erf) GELU.

struct GeluOp(Precomputed);

impl CustomOp1 for GeluOp {
    fn name(&self) -> &'static str {
        "fused-gelu-erf"
    }
    precomputed_forward!(1, 0);
    fn bwd(&self, x: &Tensor, _y: &Tensor, g: &Tensor) -> Result<Option<Tensor>> {
        let (x, g) = (x.detach(), g.detach());
        if cpu_f32(&x) && cpu_f32(&g) {
            let dx = with_f32(&x, |xs| {
                with_f32(&g, |gs| crate::kernels::gelu_backward(xs, gs))
            })??;
            return Ok(Some(Tensor::from_vec(dx, x.shape(), x.device())?));
        }
        let cdf = ((x.affine(std::f64::consts::FRAC_1_SQRT_2, 0.0)?.erf()? + 1.0)? * 0.5)?;
        let pdf =
            (x.sqr()?.affine(-0.5, 0.0)?.exp()? * (1.0 / (2.0 * std::f64::consts::PI).sqrt()))?;
        Ok(Some((g * (cdf + (x * pdf)?)?)?))
    }
}

/// Exact GELU, x * Φ(x), as timm's `nn.GELU()`.
pub fn gelu_erf(x: &Tensor) -> Result<Tensor> {
    let y = gelu_erf_value(x)?;
    x.apply_op1(GeluOp(Precomputed::new(y)?))
}

/// The value of the exact GELU, with no graph.
pub fn gelu_erf_value(x: &Tensor) -> Result<Tensor> {
    if cpu_f32(x) {
        let y = with_f32(x, crate::kernels::gelu)?;
        return Tensor::from_vec(y, x.shape(), x.device());
    }
    x.detach().gelu_erf()
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    /// Compares the fused op's value and gradients with candle's composed reference ops.
    fn check(
        name: &str,
        fused: impl Fn(&[Tensor]) -> Tensor,
        reference: impl Fn(&[Tensor]) -> Tensor,
        shapes: &[&[usize]],
    ) {
        let dev = Device::Cpu;
        let vars: Vec<Var> = shapes
            .iter()
            .map(|s| Var::from_tensor(&Tensor::randn(0f32, 1.0, *s, &dev).unwrap()).unwrap())
            .collect();
        let ts: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
        let yf = fused(&ts);
        let yr = reference(&ts);
        // A non-trivial upstream gradient: weight every output differently.
        let wgt = Tensor::randn(0f32, 1.0, yf.shape(), &dev).unwrap();
        let gf = (&yf * &wgt).unwrap().sum_all().unwrap().backward().unwrap();
        let gr = (&yr * &wgt).unwrap().sum_all().unwrap().backward().unwrap();
        let diff = |a: &Tensor, b: &Tensor| -> f32 {
            crate::max_abs_diff(a, b).unwrap() / crate::max_abs(b).unwrap().max(1e-6)
        };
        assert!(
            diff(&yf, &yr) < 1e-5,
            "{name}: forward differs by {}",
            diff(&yf, &yr)
        );
        for (i, v) in vars.iter().enumerate() {
            let a = gf
                .get(v.as_tensor())
                .unwrap_or_else(|| panic!("{name}: no gradient for input {i}"));
            let b = gr.get(v.as_tensor()).unwrap();
            assert!(
                diff(a, b) < 1e-4,
                "{name}: gradient {i} differs by {}",
                diff(a, b)
            );
        }
    }

    #[test]
    fn fused_ops_match_composed_candle_ops() {
        check(
            "linear",
            |t| linear(&t[0], &t[1], &t[2]).unwrap(),
            |t| {
                t[0].matmul(&t[1].t().unwrap())
                    .unwrap()
                    .broadcast_add(&t[2])
                    .unwrap()
            },
            &[&[37, 24], &[11, 24], &[11]],
        );
        check(
            "linear (3-D input)",
            |t| linear(&t[0], &t[1], &t[2]).unwrap(),
            |t| {
                t[0].broadcast_matmul(&t[1].t().unwrap())
                    .unwrap()
                    .broadcast_add(&t[2])
                    .unwrap()
            },
            &[&[4, 9, 24], &[11, 24], &[11]],
        );
        check(
            "layer_norm",
            |t| layer_norm(&t[0], &t[1], &t[2], 1e-6).unwrap(),
            |t| candle_nn::ops::layer_norm_slow(&t[0], &t[1], &t[2], 1e-6).unwrap(),
            &[&[3, 17, 40], &[40], &[40]],
        );
        check(
            "softmax",
            |t| softmax(&t[0]).unwrap(),
            |t| candle_nn::ops::softmax(&t[0], D::Minus1).unwrap(),
            &[&[2, 3, 17, 17]],
        );
        check(
            "gelu",
            |t| gelu_erf(&t[0]).unwrap(),
            |t| t[0].gelu_erf().unwrap(),
            &[&[5, 9000]],
        );
    }
}
