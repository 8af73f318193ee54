//! Training-path operations with hand-written backward passes.
//!
//! candle's generic backward materialises a zero-filled buffer and an add for every gradient
//! edge, and composes softmax / layer norm / GELU out of 5-10 elementwise ops each. These ops
//! compute their forward with candle's fused kernels (on any device) and attach a backward that
//! is one pass over the data on the CPU (and a short tensor-op formula on other devices).
//!
//! How: a `CustomOp` whose forward hands back a result computed beforehand with detached
//! tensors (one copy), so the same code serves every backend.

use candle_core::{
    CpuStorage, CudaStorage, CustomOp1, CustomOp3, DType, Layout, Shape, Storage, Tensor, D,
};
use rayon::prelude::*;
use std::sync::Mutex;

type Result<T> = candle_core::Result<T>;

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

/// Runs `f` on the f32 data of a contiguous CPU tensor.
fn with_f32<R>(t: &Tensor, f: impl FnOnce(&[f32]) -> R) -> Result<R> {
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
    fn cpu_fwd(
        &self,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        self.0.cpu()
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
        self.0.cuda()
    }
    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _b: &Tensor,
        _res: &Tensor,
        g: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (x, w, g) = (x.detach(), w.detach(), g.detach());
        let dx = g.matmul(&w)?;
        let dw = g.t()?.matmul(&x)?;
        let db = g.sum(0)?;
        Ok((Some(dx), Some(dw), Some(db)))
    }
}

/// `x W^T + b` for x of shape (rows, in), W (out, in), b (out).
pub fn linear(x: &Tensor, w: &Tensor, b: &Tensor) -> Result<Tensor> {
    let y = x
        .detach()
        .matmul(&w.detach().t()?)?
        .broadcast_add(&b.detach())?;
    x.apply_op3(w, b, Linear(Precomputed::new(y)?))
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
    fn cpu_fwd(
        &self,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        self.out.cpu()
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
        self.out.cuda()
    }
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
        if cpu_f32(&x) && cpu_f32(&g) {
            let rows = x.elem_count() / d;
            let eps = self.eps;
            let mut dx = vec![0f32; x.elem_count()];
            let (dw, db) = with_f32(&x, |xs| {
                with_f32(&g, |gs| {
                    with_f32(&w, |ws| {
                        let chunk = rows.div_ceil(rayon::current_num_threads() * 4).max(1);
                        dx.par_chunks_mut(chunk * d)
                            .enumerate()
                            .map(|(ci, dxc)| {
                                let mut dw = vec![0f32; d];
                                let mut db = vec![0f32; d];
                                let mut xhat = vec![0f32; d];
                                for (ri, dxr) in dxc.chunks_mut(d).enumerate() {
                                    let r = ci * chunk + ri;
                                    let xr = &xs[r * d..(r + 1) * d];
                                    let gr = &gs[r * d..(r + 1) * d];
                                    let mean = xr.iter().sum::<f32>() / d as f32;
                                    let var =
                                        xr.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>()
                                            / d as f32;
                                    let rstd = 1.0 / (var + eps).sqrt();
                                    let (mut s1, mut s2) = (0f32, 0f32);
                                    for j in 0..d {
                                        xhat[j] = (xr[j] - mean) * rstd;
                                        let gy = gr[j] * ws[j];
                                        s1 += gy;
                                        s2 += gy * xhat[j];
                                        dw[j] += gr[j] * xhat[j];
                                        db[j] += gr[j];
                                    }
                                    let (m1, m2) = (s1 / d as f32, s2 / d as f32);
                                    for j in 0..d {
                                        dxr[j] = rstd * (gr[j] * ws[j] - m1 - xhat[j] * m2);
                                    }
                                }
                                (dw, db)
                            })
                            .reduce(
                                || (vec![0f32; d], vec![0f32; d]),
                                |(mut a, mut b), (c, e)| {
                                    a.iter_mut().zip(&c).for_each(|(p, q)| *p += q);
                                    b.iter_mut().zip(&e).for_each(|(p, q)| *p += q);
                                    (a, b)
                                },
                            )
                    })
                })
            })???;
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
    let y = candle_nn::ops::layer_norm(&x.detach().contiguous()?, &w.detach(), &b.detach(), eps)?;
    x.apply_op3(
        w,
        b,
        LayerNorm {
            out: Precomputed::new(y)?,
            eps,
        },
    )
}

// ------------------------------------------------------------------------------------------
// Softmax over the last dimension.

struct Softmax(Precomputed);

impl CustomOp1 for Softmax {
    fn name(&self) -> &'static str {
        "fused-softmax"
    }
    fn cpu_fwd(&self, _: &CpuStorage, _: &Layout) -> Result<(CpuStorage, Shape)> {
        self.0.cpu()
    }
    fn cuda_fwd(&self, _: &CudaStorage, _: &Layout) -> Result<(CudaStorage, Shape)> {
        self.0.cuda()
    }
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
                            let (yr, gr) = (&ys[o..o + n], &gs[o..o + n]);
                            let s: f32 = yr.iter().zip(gr).map(|(a, b)| a * b).sum();
                            for j in 0..n {
                                dxr[j] = yr[j] * (gr[j] - s);
                            }
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
    let y = candle_nn::ops::softmax_last_dim(&x.detach().contiguous()?)?;
    x.apply_op1(Softmax(Precomputed::new(y)?))
}

// ------------------------------------------------------------------------------------------
// Exact (erf) GELU.

struct Gelu(Precomputed);

impl CustomOp1 for Gelu {
    fn name(&self) -> &'static str {
        "fused-gelu-erf"
    }
    fn cpu_fwd(&self, _: &CpuStorage, _: &Layout) -> Result<(CpuStorage, Shape)> {
        self.0.cpu()
    }
    fn cuda_fwd(&self, _: &CudaStorage, _: &Layout) -> Result<(CudaStorage, Shape)> {
        self.0.cuda()
    }
    fn bwd(&self, x: &Tensor, _y: &Tensor, g: &Tensor) -> Result<Option<Tensor>> {
        let (x, g) = (x.detach(), g.detach());
        if cpu_f32(&x) && cpu_f32(&g) {
            let mut dx = vec![0f32; x.elem_count()];
            with_f32(&x, |xs| {
                with_f32(&g, |gs| {
                    dx.par_chunks_mut(4096).enumerate().for_each(|(ci, dxc)| {
                        let o = ci * 4096;
                        for (j, d) in dxc.iter_mut().enumerate() {
                            let v = xs[o + j] as f64;
                            let cdf = 0.5
                                * (1.0
                                    + candle_core::cpu::erf::erf_f64(v / std::f64::consts::SQRT_2));
                            let pdf = (-0.5 * v * v).exp() / (2.0 * std::f64::consts::PI).sqrt();
                            *d = gs[o + j] * (cdf + v * pdf) as f32;
                        }
                    })
                })
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
    let y = x.detach().gelu_erf()?;
    x.apply_op1(Gelu(Precomputed::new(y)?))
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
            let scale: f32 = b
                .abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap()
                .max(1e-6);
            (a - b)
                .unwrap()
                .abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap()
                / scale
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
            let d: f32 = (&y1 - &y2)
                .unwrap()
                .abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar()
                .unwrap();
            assert!(d < 1e-5, "forward {d}");
            let g1 = (&y1 * &w).unwrap().sum_all().unwrap().backward().unwrap();
            let g2 = (&y2 * &w).unwrap().sum_all().unwrap().backward().unwrap();
            for v in [&a, &bt] {
                let d: f32 = (g1.get(v).unwrap() - g2.get(v).unwrap())
                    .unwrap()
                    .abs()
                    .unwrap()
                    .max_all()
                    .unwrap()
                    .to_scalar()
                    .unwrap();
                assert!(d < 1e-4, "gradient {d}");
            }
        }
    }
}
