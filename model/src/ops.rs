//! Training-path operations with hand-written backward passes.
//!
//! candle's generic backward materialises a zero-filled buffer and an add for every gradient
//! edge, and composes softmax / layer norm / GELU out of 5-10 elementwise ops each. These ops
//! compute their forward with candle's fused kernels (on any device) and attach a backward that
//! is one pass over the data on the CPU (and a short tensor-op formula on other devices).
//!
//! How: a `CustomOp` whose forward hands back a result computed beforehand with detached
//! tensors (one copy), so the same code serves every backend.

use crate::kernels::softmax_backward_row;
use candle_core::{
    CpuStorage, CudaStorage, CustomOp1, CustomOp3, DType, Layout, Shape, Storage, Tensor, D,
};
use rayon::prelude::*;
use std::sync::Mutex;

type Result<T> = candle_core::Result<T>;

thread_local! {
    static INPUT_GRADS_ONLY: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `f` (a backward pass) without computing weight and bias gradients in the fused ops:
/// the relevance map needs only dL/dA from its first backward, and the weight gradients of
/// the linear layers are a third of a backward's arithmetic. The weights then receive no
/// gradient from this pass.
pub fn input_grads_only<R>(f: impl FnOnce() -> R) -> R {
    struct Reset;
    impl Drop for Reset {
        fn drop(&mut self) {
            INPUT_GRADS_ONLY.with(|c| c.set(false));
        }
    }
    INPUT_GRADS_ONLY.with(|c| c.set(true));
    let _reset = Reset; // also on unwind
    f()
}

pub(crate) fn param_grads_wanted() -> bool {
    !INPUT_GRADS_ONLY.with(|c| c.get())
}

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

/// Runs `f` on the f32 data of a CPU tensor, read in place when it is contiguous (copied into
/// a contiguous layout otherwise).
pub fn with_f32<R>(t: &Tensor, f: impl FnOnce(&[f32]) -> R) -> Result<R> {
    let t = t.contiguous()?;
    let (s, l) = t.storage_and_layout();
    match &*s {
        Storage::Cpu(c) => {
            let all = c.as_slice::<f32>()?;
            let o = l.start_offset();
            Ok(f(&all[o..o + l.shape().elem_count()]))
        }
        _ => candle_core::bail!("expected a CPU tensor"),
    }
}

fn cpu_f32(t: &Tensor) -> bool {
    t.device().is_cpu() && t.dtype() == DType::F32
}

// ------------------------------------------------------------------------------------------
// Linear: y = x W^T + b for 2-D x.

struct Linear(Precomputed);

impl CustomOp3 for Linear {
    fn name(&self) -> &'static str {
        "fused-linear"
    }
    precomputed_forward!(3, 0);
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
        let skip = !param_grads_wanted();
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
    let y = linear_value(x, w, Some(b), None)?;
    x.apply_op3(w, b, Linear(Precomputed::new(y)?))
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
                        crate::kernels::linear(
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

// ------------------------------------------------------------------------------------------
// LayerNorm over the last dimension.

struct LayerNorm {
    out: Precomputed,
    eps: f32,
}

impl CustomOp3 for LayerNorm {
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
        LayerNorm {
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
                with_f32(b, |bs| crate::kernels::layer_norm(xs, ws, bs, eps))
            })
        })???;
        return Tensor::from_vec(y, x.shape(), x.device());
    }
    candle_nn::ops::layer_norm(&x.detach().contiguous()?, &w.detach(), &b.detach(), eps)
}

// ------------------------------------------------------------------------------------------
// Softmax over the last dimension.

struct Softmax(Precomputed);

impl CustomOp1 for Softmax {
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
    x.apply_op1(Softmax(Precomputed::new(y)?))
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

// ------------------------------------------------------------------------------------------
// Exact (erf) GELU.

struct Gelu(Precomputed);

impl CustomOp1 for Gelu {
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
    x.apply_op1(Gelu(Precomputed::new(y)?))
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

// ------------------------------------------------------------------------------------------
// Batched matrix product for many small matrices (attention: B x heads products of N x d).
//
// candle's CPU matmul loops over the batch and parallelises inside each small GEMM, which
// for attention-sized matrices costs more in thread hand-offs than in arithmetic. Here the
// batch is spread over threads and each product runs single-threaded.

/// Batch count, batch stride, row stride, column stride and offset of a (..., r, c) layout
/// whose batch dimensions collapse into one stride.
fn batched(l: &Layout) -> Option<(usize, usize, isize, isize, usize)> {
    let dims = l.dims();
    let st = l.stride();
    let r = dims.len();
    if r < 2 {
        return None;
    }
    let batch: usize = dims[..r - 2].iter().product();
    let mut bstride = 0usize;
    let mut expect: Option<usize> = None;
    for i in (0..r - 2).rev() {
        if dims[i] == 1 {
            continue;
        }
        match expect {
            None => {
                bstride = st[i];
                expect = Some(st[i] * dims[i]);
            }
            Some(e) if st[i] == e => expect = Some(st[i] * dims[i]),
            Some(_) => return None,
        }
    }
    Some((
        batch,
        bstride,
        st[r - 2] as isize,
        st[r - 1] as isize,
        l.start_offset(),
    ))
}

struct Bmm;

impl candle_core::CustomOp2 for Bmm {
    fn name(&self) -> &'static str {
        "batched-small-matmul"
    }
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (a, b) = (s1.as_slice::<f32>()?, s2.as_slice::<f32>()?);
        let (d1, d2) = (l1.dims(), l2.dims());
        let r = d1.len();
        let (m, k, n) = (d1[r - 2], d1[r - 1], d2[r - 1]);
        let (Some((batch, sa, a_rs, a_cs, oa)), Some((_, sb, b_rs, b_cs, ob))) =
            (batched(l1), batched(l2))
        else {
            candle_core::bail!("batched matmul: operands need collapsible batch dimensions")
        };
        let mut dst = vec![0f32; batch * m * n];
        let threads = rayon::current_num_threads();
        let run = |i: usize, d: &mut [f32], par: gemm::Parallelism| unsafe {
            gemm::gemm(
                m,
                n,
                k,
                d.as_mut_ptr(),
                1,
                n as isize,
                false,
                a.as_ptr().add(oa + i * sa),
                a_cs,
                a_rs,
                b.as_ptr().add(ob + i * sb),
                b_cs,
                b_rs,
                0.0,
                1.0,
                false,
                false,
                false,
                par,
            )
        };
        if m * n > 0 {
            if batch >= threads {
                dst.par_chunks_mut(m * n)
                    .enumerate()
                    .for_each(|(i, d)| run(i, d, gemm::Parallelism::None));
            } else {
                for (i, d) in dst.chunks_mut(m * n).enumerate() {
                    run(i, d, gemm::Parallelism::Rayon(threads));
                }
            }
        }
        let mut shape = d1.to_vec();
        shape[r - 1] = n;
        Ok((CpuStorage::F32(dst), Shape::from(shape)))
    }
    fn bwd(
        &self,
        a: &Tensor,
        b: &Tensor,
        _res: &Tensor,
        g: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (a, b, g) = (a.detach(), b.detach(), g.detach());
        Ok((Some(bmm(&g, &b.t()?)?), Some(bmm(&a.t()?, &g)?)))
    }
}

/// `a @ b` over matching batch dimensions, differentiable; fast for many small matrices.
pub fn bmm(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    if !(cpu_f32(a) && cpu_f32(b)) || a.rank() < 3 || a.rank() != b.rank() {
        return a.matmul(b);
    }
    let (ra, rb) = (a.dims(), b.dims());
    let r = ra.len();
    if ra[..r - 2] != rb[..r - 2] || ra[r - 1] != rb[r - 2] {
        return a.matmul(b); // let candle report the shape error
    }
    let a = if batched(a.layout()).is_some() {
        a.clone()
    } else {
        a.contiguous()?
    };
    let b = if batched(b.layout()).is_some() {
        b.clone()
    } else {
        b.contiguous()?
    };
    a.apply_op2(&b, Bmm)
}

#[cfg(test)]
mod bmm_tests {
    use super::*;
    use candle_core::{Device, Var};

    #[test]
    fn bmm_matches_matmul_with_gradients_and_strided_operands() {
        let dev = Device::Cpu;
        for (bs, m, k, n) in [
            (1usize, 5usize, 7usize, 3usize),
            (6, 17, 16, 17),
            (40, 9, 4, 11),
        ] {
            let a =
                Var::from_tensor(&Tensor::randn(0f32, 1.0, (bs, 2, m, k), &dev).unwrap()).unwrap();
            let bt =
                Var::from_tensor(&Tensor::randn(0f32, 1.0, (bs, 2, n, k), &dev).unwrap()).unwrap();
            let b = bt.t().unwrap(); // a strided (transposed) operand, as k^T in attention
            let w = Tensor::randn(0f32, 1.0, (bs, 2, m, n), &dev).unwrap();
            let y1 = bmm(&a, &b).unwrap();
            let y2 = a.matmul(&b.contiguous().unwrap()).unwrap();
            let d = crate::max_abs_diff(&y1, &y2).unwrap();
            assert!(d < 1e-5, "forward {d}");
            let g1 = (&y1 * &w).unwrap().sum_all().unwrap().backward().unwrap();
            let g2 = (&y2 * &w).unwrap().sum_all().unwrap().backward().unwrap();
            for v in [&a, &bt] {
                let d = crate::max_abs_diff(g1.get(v).unwrap(), g2.get(v).unwrap()).unwrap();
                assert!(d < 1e-4, "gradient {d}");
            }
        }
    }
}

// ------------------------------------------------------------------------------------------
// Attention straight from the fused qkv projection (CPU).
//
// Splitting qkv into heads takes a reshape, a permute, three narrows, a scale and three
// copies, each of which costs a zero-filled buffer and an add in candle's backward. These two
// ops read q, k and v in place (strided GEMMs on the (B, N, 3, H, hd) layout) and keep the
// attention map as a tensor of its own, so relevance probes still attach to it.

#[derive(Clone, Copy)]
struct SharedMut(*mut f32);
// SAFETY: every parallel task writes a disjoint set of elements through it.
unsafe impl Send for SharedMut {}
unsafe impl Sync for SharedMut {}

/// Shape bookkeeping for a qkv tensor of shape (B, N, 3·H·hd).
#[derive(Clone, Copy)]
pub(crate) struct Heads {
    pub b: usize,
    pub n: usize,
    pub h: usize,
    pub hd: usize,
}

impl Heads {
    pub fn of(qkv: &Tensor, h: usize) -> Result<Self> {
        let (b, n, d3) = qkv.dims3()?;
        if d3 % (3 * h) != 0 {
            candle_core::bail!("qkv width {d3} is not 3 x {h} heads");
        }
        Ok(Self {
            b,
            n,
            h,
            hd: d3 / 3 / h,
        })
    }
    /// The layout of a block's qkv for `b` images of `n` tokens, model width `d`, `h` heads.
    pub fn from_width(b: usize, n: usize, h: usize, d: usize) -> Self {
        Self { b, n, h, hd: d / h }
    }
    pub fn d(&self) -> usize {
        self.h * self.hd
    }
    fn row(&self) -> usize {
        3 * self.d()
    }
    /// Offset of head `hi` of slot `s` (0 = q, 1 = k, 2 = v) in batch `bi`.
    fn at(&self, bi: usize, s: usize, hi: usize) -> usize {
        bi * self.n * self.row() + s * self.d() + hi * self.hd
    }
}

/// One head's product on the calling thread: dst (m, n) with row stride `dst_rs` =
/// scale · lhs (m, k) · rhs (k, n), operands at any strides.
#[allow(clippy::too_many_arguments)]
unsafe fn mm(
    m: usize,
    n: usize,
    k: usize,
    dst: *mut f32,
    dst_rs: usize,
    lhs: *const f32,
    lhs_rs: usize,
    lhs_cs: usize,
    rhs: *const f32,
    rhs_rs: usize,
    rhs_cs: usize,
    scale: f32,
) {
    // SAFETY: the caller's promise (every strided access inside its buffers).
    unsafe {
        crate::kernels::gemm_strided(
            (m, n, k),
            dst,
            (dst_rs, 1),
            false,
            lhs,
            (lhs_rs, lhs_cs),
            rhs,
            (rhs_rs, rhs_cs),
            scale,
            false,
        )
    }
}

/// softmax(scale · q kᵀ) of every (image, head) from qkv (B, N, 3·H·hd): (B, H, N, N).
pub(crate) fn probs_forward(qkv: &[f32], g: Heads, scale: f32) -> Vec<f32> {
    let n = g.n;
    let fill = |out: &mut [std::mem::MaybeUninit<f32>]| {
        out.par_chunks_mut(n * n).enumerate().for_each(|(bh, o)| {
            let (bi, hi) = (bh / g.h, bh % g.h);
            // SAFETY: the GEMM writes all n·n scores of this head (beta = 0, no read of dst)
            // before the slice is viewed as initialised floats.
            let o = unsafe {
                let o = o.as_mut_ptr().cast::<f32>();
                let q = qkv.as_ptr().add(g.at(bi, 0, hi));
                let k = qkv.as_ptr().add(g.at(bi, 1, hi));
                // scores = scale * q k^T; k^T(kk, j) = k[j, kk].
                mm(n, n, g.hd, o, n, q, g.row(), 1, k, 1, g.row(), scale);
                std::slice::from_raw_parts_mut(o, n * n)
            };
            crate::kernels::softmax_rows(o, n);
        })
    };
    // SAFETY: `fill` writes every head's n·n block.
    unsafe { crate::kernels::written_by(g.b * g.h * n * n, fill) }
}

/// Backward of [`probs_forward`]: writes dq and dk (the q and k columns of `dqkv`; the v
/// columns are left as they are) from the attention map `a` and its gradient `da`.
pub(crate) fn probs_backward(
    x: &[f32],
    a: &[f32],
    da: &[f32],
    g: Heads,
    scale: f32,
    dqkv: &mut [f32],
) {
    let n = g.n;
    assert_eq!(dqkv.len(), x.len(), "attention backward: dqkv size");
    let ptr = SharedMut(dqkv.as_mut_ptr());
    (0..g.b * g.h).into_par_iter().for_each(|bh| {
        let p = ptr;
        let (bi, hi) = (bh / g.h, bh % g.h);
        let (ar, dar) = (
            &a[bh * n * n..(bh + 1) * n * n],
            &da[bh * n * n..(bh + 1) * n * n],
        );
        let mut ds = vec![0f32; n * n];
        for ((yr, gr), dr) in ar
            .chunks_exact(n)
            .zip(dar.chunks_exact(n))
            .zip(ds.chunks_exact_mut(n))
        {
            softmax_backward_row(yr, gr, dr);
        }
        unsafe {
            let q = x.as_ptr().add(g.at(bi, 0, hi));
            let k = x.as_ptr().add(g.at(bi, 1, hi));
            // dq = scale dS k ; dk = scale dS^T q
            mm(
                n,
                g.hd,
                n,
                p.0.add(g.at(bi, 0, hi)),
                g.row(),
                ds.as_ptr(),
                n,
                1,
                k,
                g.row(),
                1,
                scale,
            );
            mm(
                n,
                g.hd,
                n,
                p.0.add(g.at(bi, 1, hi)),
                g.row(),
                ds.as_ptr(),
                1,
                n,
                q,
                g.row(),
                1,
                scale,
            );
        }
    })
}

/// The heads' outputs `A v` of the first `queries` tokens from the attention map a
/// (B, H, N, N) and qkv: (B, queries, H·hd).
pub(crate) fn apply_forward(a: &[f32], qkv: &[f32], g: Heads, queries: usize) -> Vec<f32> {
    let (b, n, d, q) = (g.b, g.n, g.d(), queries);
    assert!(q <= n, "attention: {q} queries of {n} tokens");
    let fill = |out: &mut [std::mem::MaybeUninit<f32>]| {
        out.par_chunks_mut(q * d).enumerate().for_each(|(bi, o)| {
            let o = o.as_mut_ptr().cast::<f32>();
            for hi in 0..g.h {
                let bh = bi * g.h + hi;
                // SAFETY: head hi writes columns hi·hd .. (hi+1)·hd of every row of this batch
                // element (beta = 0), inside its (q, d) block.
                unsafe {
                    let v = qkv.as_ptr().add(g.at(bi, 2, hi));
                    mm(
                        q,
                        g.hd,
                        n,
                        o.add(hi * g.hd),
                        d,
                        a.as_ptr().add(bh * n * n),
                        n,
                        1,
                        v,
                        g.row(),
                        1,
                        1.0,
                    );
                }
            }
        })
    };
    // SAFETY: the heads together write all d columns of every row.
    unsafe { crate::kernels::written_by(b * q * d, fill) }
}

/// Backward of [`apply_forward`] with the gradient `go` (B, queries, H·hd): returns dA (zero
/// in the rows of the tokens that were not queried) and writes dv (the v columns of `dqkv`;
/// the q and k columns are left as they are).
pub(crate) fn apply_backward(
    a: &[f32],
    x: &[f32],
    go: &[f32],
    g: Heads,
    queries: usize,
    dqkv: &mut [f32],
) -> Vec<f32> {
    let (n, d, q) = (g.n, g.d(), queries);
    assert_eq!(dqkv.len(), x.len(), "attention backward: dqkv size");
    assert_eq!(
        go.len(),
        g.b * q * d,
        "attention backward: output gradient size"
    );
    let pq = SharedMut(dqkv.as_mut_ptr());
    let fill = |da: &mut [std::mem::MaybeUninit<f32>]| {
        da.par_chunks_mut(n * n).enumerate().for_each(|(bh, dar)| {
            let p = pq;
            let (bi, hi) = (bh / g.h, bh % g.h);
            // SAFETY: rows q.. of this head's block are zeroed, rows ..q written by the first
            // product (beta = 0); dv of head hi of image bi is written by this task alone.
            unsafe {
                let dar = dar.as_mut_ptr().cast::<f32>();
                std::ptr::write_bytes(dar.add(q * n), 0, (n - q) * n);
                let v = x.as_ptr().add(g.at(bi, 2, hi));
                let dob = go.as_ptr().add(bi * q * d + hi * g.hd);
                // dA = dO v^T (its first q rows) ; dv = A^T dO (A's first q rows)
                mm(q, n, g.hd, dar, n, dob, d, 1, v, 1, g.row(), 1.0);
                mm(
                    n,
                    g.hd,
                    q,
                    p.0.add(g.at(bi, 2, hi)),
                    g.row(),
                    a.as_ptr().add(bh * n * n),
                    1,
                    n,
                    dob,
                    d,
                    1,
                    1.0,
                );
            }
        })
    };
    // SAFETY: `fill` writes every element (above).
    unsafe { crate::kernels::written_by(a.len(), fill) }
}

struct AttnProbs {
    h: usize,
    scale: f32,
}

impl CustomOp1 for AttnProbs {
    fn name(&self) -> &'static str {
        "attention-probs"
    }
    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let (b, n, d3) = l.shape().dims3()?;
        let g = Heads {
            b,
            n,
            h: self.h,
            hd: d3 / 3 / self.h,
        };
        let qkv = &s.as_slice::<f32>()?[l.start_offset()..][..b * n * d3];
        let out = probs_forward(qkv, g, self.scale);
        Ok((CpuStorage::F32(out), Shape::from((g.b, g.h, n, n))))
    }
    fn bwd(&self, qkv: &Tensor, a: &Tensor, da: &Tensor) -> Result<Option<Tensor>> {
        let g = Heads::of(qkv, self.h)?;
        let mut dqkv = vec![0f32; qkv.elem_count()];
        with_f32(&qkv.detach(), |x| {
            with_f32(&a.detach(), |a| {
                with_f32(&da.detach(), |da| {
                    probs_backward(x, a, da, g, self.scale, &mut dqkv)
                })
            })
        })???;
        Ok(Some(Tensor::from_vec(dqkv, qkv.shape(), qkv.device())?))
    }
}

/// Receives dL/dA of one block's attention map: the fused attention's backward records the
/// gradient of its attention input the first time a backward pass reaches it. This replaces a
/// zero-valued probe added to the map (an extra (B, H, N, N) tensor per block, plus a
/// zero-filled buffer and an add per gradient edge in every backward).
#[derive(Clone, Default)]
pub struct GradSlot(std::sync::Arc<Mutex<SlotState>>);

#[derive(Default)]
enum SlotState {
    #[default]
    Waiting,
    Captured(Tensor),
    Taken,
}

impl GradSlot {
    pub(crate) fn offer(&self, g: &Tensor) {
        if let Ok(mut s) = self.0.lock() {
            if matches!(*s, SlotState::Waiting) {
                *s = SlotState::Captured(g.clone());
            }
        }
    }
    /// The captured gradient, once; `None` before any backward pass and after it was taken.
    pub fn take(&self) -> Option<Tensor> {
        let mut s = self.0.lock().ok()?;
        match std::mem::replace(&mut *s, SlotState::Taken) {
            SlotState::Captured(t) => Some(t),
            SlotState::Waiting => {
                *s = SlotState::Waiting;
                None
            }
            SlotState::Taken => None,
        }
    }
}

struct AttnApply {
    h: usize,
    slot: Option<GradSlot>,
}

impl candle_core::CustomOp2 for AttnApply {
    fn name(&self) -> &'static str {
        "attention-apply"
    }
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (b, n, d3) = l2.shape().dims3()?;
        let g = Heads {
            b,
            n,
            h: self.h,
            hd: d3 / 3 / self.h,
        };
        let a = &s1.as_slice::<f32>()?[l1.start_offset()..][..b * g.h * n * n];
        let qkv = &s2.as_slice::<f32>()?[l2.start_offset()..][..b * n * d3];
        let out = apply_forward(a, qkv, g, n);
        Ok((CpuStorage::F32(out), Shape::from((b, n, g.d()))))
    }
    fn bwd(
        &self,
        a: &Tensor,
        qkv: &Tensor,
        _res: &Tensor,
        dout: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let g = Heads::of(qkv, self.h)?;
        let mut dqkv = vec![0f32; qkv.elem_count()];
        let da = with_f32(&a.detach(), |a| {
            with_f32(&qkv.detach(), |x| {
                with_f32(&dout.detach(), |go| {
                    apply_backward(a, x, go, g, g.n, &mut dqkv)
                })
            })
        })???;
        let da = Tensor::from_vec(da, a.shape(), a.device())?;
        if let Some(slot) = &self.slot {
            slot.offer(&da);
        }
        Ok((
            Some(da),
            Some(Tensor::from_vec(dqkv, qkv.shape(), qkv.device())?),
        ))
    }
}

/// Whether [`attention_probs`] / [`attention_apply`] have a kernel for this tensor.
pub fn fused_attention_available(qkv: &Tensor) -> bool {
    cpu_f32(qkv)
}

/// softmax(scale · q kᵀ) per head, (B, H, N, N), from qkv (B, N, 3·H·hd) laid out as timm's
/// fused projection ([q | k | v], heads contiguous within each).
pub fn attention_probs(qkv: &Tensor, heads: usize, scale: f64) -> Result<Tensor> {
    Heads::of(qkv, heads)?;
    qkv.contiguous()?.apply_op1(AttnProbs {
        h: heads,
        scale: scale as f32,
    })
}

/// The heads' outputs `A v`, concatenated per token: (B, N, H·hd). With a `slot`, the first
/// backward pass through this op leaves dL/d`attn` in it.
pub fn attention_apply(
    attn: &Tensor,
    qkv: &Tensor,
    heads: usize,
    slot: Option<&GradSlot>,
) -> Result<Tensor> {
    let g = Heads::of(qkv, heads)?;
    if attn.dims() != [g.b, g.h, g.n, g.n] {
        candle_core::bail!(
            "attention map {:?} does not match qkv {:?}",
            attn.dims(),
            qkv.dims()
        );
    }
    attn.contiguous()?.apply_op2(
        &qkv.contiguous()?,
        AttnApply {
            h: heads,
            slot: slot.cloned(),
        },
    )
}

/// Inference attention of the first `queries` tokens: softmax(scale · q kᵀ) v per head,
/// concatenated per token, (B, queries, H·hd), with no graph and no (B, H, N, N) map kept.
/// On the CPU each (image, head) runs on one thread with its scores in a private buffer that
/// stays in cache between the two products; `queries < N` serves a head that reads only the
/// class token.
pub fn attention_value(qkv: &Tensor, heads: usize, scale: f64, queries: usize) -> Result<Tensor> {
    let g = Heads::of(qkv, heads)?;
    if queries == 0 || queries > g.n {
        candle_core::bail!("attention: {queries} queries of {} tokens", g.n);
    }
    if cpu_f32(qkv) {
        let (n, d, m) = (g.n, g.d(), queries);
        let out = with_f32(&qkv.contiguous()?, |x| {
            let fill = |out: &mut [std::mem::MaybeUninit<f32>]| {
                let shared = SharedMut(out.as_mut_ptr().cast::<f32>());
                (0..g.b * g.h).into_par_iter().for_each(|bh| {
                    let dst = shared;
                    let (bi, hi) = (bh / g.h, bh % g.h);
                    let mut s = vec![0f32; m * n];
                    // SAFETY: q, k, v are read inside qkv at their strides; this task writes
                    // only columns hi·hd .. (hi+1)·hd of rows 0..m of image bi (beta = 0).
                    unsafe {
                        let q = x.as_ptr().add(g.at(bi, 0, hi));
                        let k = x.as_ptr().add(g.at(bi, 1, hi));
                        let v = x.as_ptr().add(g.at(bi, 2, hi));
                        mm(
                            m,
                            n,
                            g.hd,
                            s.as_mut_ptr(),
                            n,
                            q,
                            g.row(),
                            1,
                            k,
                            1,
                            g.row(),
                            scale as f32,
                        );
                        crate::kernels::softmax_rows(&mut s, n);
                        let o = dst.0.add(bi * m * d + hi * g.hd);
                        mm(m, g.hd, n, o, d, s.as_ptr(), n, 1, v, g.row(), 1, 1.0);
                    }
                })
            };
            // SAFETY: the (image, head) tasks together write every element.
            unsafe { crate::kernels::written_by(g.b * m * d, fill) }
        })?;
        return Tensor::from_vec(out, (g.b, m, d), qkv.device());
    }
    let parts = qkv
        .detach()
        .reshape((g.b, g.n, 3, g.h, g.hd))?
        .permute((2, 0, 3, 1, 4))?;
    let q = (parts.get(0)?.narrow(2, 0, queries)? * scale)?.contiguous()?;
    let (k, v) = (parts.get(1)?.contiguous()?, parts.get(2)?.contiguous()?);
    softmax_value(&q.matmul(&k.t()?)?)?
        .matmul(&v)?
        .transpose(1, 2)?
        .contiguous()?
        .reshape((g.b, queries, g.d()))
}

#[cfg(test)]
mod attention_tests {
    use super::*;
    use candle_core::{Device, Var};

    #[test]
    fn fused_attention_matches_composed_ops() {
        let dev = Device::Cpu;
        let (b, n, h, hd) = (3usize, 17usize, 2usize, 8usize);
        let qkv =
            Var::from_tensor(&Tensor::randn(0f32, 1.0, (b, n, 3 * h * hd), &dev).unwrap()).unwrap();
        let wa = Tensor::randn(0f32, 1.0, (b, h, n, n), &dev).unwrap();
        let wo = Tensor::randn(0f32, 1.0, (b, n, h * hd), &dev).unwrap();
        let scale = (hd as f64).powf(-0.5);
        // Composed reference, as timm writes it.
        let parts = qkv
            .reshape((b, n, 3, h, hd))
            .unwrap()
            .permute((2, 0, 3, 1, 4))
            .unwrap();
        let q = (parts.get(0).unwrap() * scale)
            .unwrap()
            .contiguous()
            .unwrap();
        let k = parts.get(1).unwrap().contiguous().unwrap();
        let v = parts.get(2).unwrap().contiguous().unwrap();
        let a_ref =
            candle_nn::ops::softmax(&q.matmul(&k.t().unwrap()).unwrap(), D::Minus1).unwrap();
        let o_ref = a_ref
            .matmul(&v)
            .unwrap()
            .transpose(1, 2)
            .unwrap()
            .reshape((b, n, h * hd))
            .unwrap();
        let a = attention_probs(&qkv, h, scale).unwrap();
        let o = attention_apply(&a, &qkv, h, None).unwrap();
        let md = |x: &Tensor, y: &Tensor| -> f32 { crate::max_abs_diff(x, y).unwrap() };
        assert!(md(&a, &a_ref) < 1e-6 && md(&o, &o_ref) < 1e-5);
        // Inference kernel: all queries, and the first few only (rows of the same output).
        let o_inf = attention_value(&qkv, h, scale, n).unwrap();
        assert!(md(&o_inf, &o_ref) < 1e-5);
        let o_first = attention_value(&qkv, h, scale, 2).unwrap();
        assert!(md(&o_first, &o_ref.narrow(1, 0, 2).unwrap()) < 1e-5);
        assert!(attention_value(&qkv, h, scale, n + 1).is_err());
        // The composed path other devices and dtypes take (here f64 on the CPU).
        let q64 = qkv.to_dtype(DType::F64).unwrap();
        let o64 = attention_value(&q64, h, scale, 3).unwrap();
        let ref3 = o_ref.narrow(1, 0, 3).unwrap();
        assert!(md(&o64.to_dtype(DType::F32).unwrap(), &ref3) < 1e-5);
        let loss = |a: &Tensor, o: &Tensor| {
            ((a * &wa).unwrap().sum_all().unwrap() + (o * &wo).unwrap().sum_all().unwrap()).unwrap()
        };
        let g1 = loss(&a, &o).backward().unwrap();
        let g2 = loss(&a_ref, &o_ref).backward().unwrap();
        let d = md(g1.get(&qkv).unwrap(), g2.get(&qkv).unwrap());
        assert!(d < 1e-4, "qkv gradient differs by {d}");

        // The slot receives dL/dA from the first backward pass only, and hands it out once.
        let av = Var::from_tensor(&a.detach()).unwrap();
        let slot = GradSlot::default();
        assert!(slot.take().is_none(), "nothing before a backward pass");
        let o = attention_apply(av.as_tensor(), &qkv.detach(), h, Some(&slot)).unwrap();
        let first = (&o * &wo).unwrap().sum_all().unwrap().backward().unwrap();
        let _second = (&o * 2.0).unwrap().sum_all().unwrap().backward().unwrap();
        let captured = slot.take().expect("captured by the first backward");
        assert!(md(&captured, first.get(av.as_tensor()).unwrap()) < 1e-6);
        assert!(slot.take().is_none(), "handed out once");
    }
}
