//! Multi-head attention straight from the fused qkv projection (CPU).
//!
//! Splitting qkv into heads takes a reshape, a permute, three narrows, a scale and three
//! copies, each of which costs a zero-filled buffer and an add in candle's backward. These ops
//! read q, k and v in place (strided GEMMs on the (B, N, 3, H, hd) layout) and keep the
//! attention map as a tensor of its own, so the relevance map can read its gradient.

use super::{cpu_f32, layers::softmax_value, with_f32, Result};
use crate::grads::GradSlot;
use crate::kernels::softmax_backward_row;
use candle_core::{CpuStorage, CustomOp1, Layout, Shape, Tensor};
use rayon::prelude::*;

/// A pointer to an output buffer that parallel tasks write through, each to its own elements.
#[derive(Clone, Copy)]
struct SharedMut(*mut f32);
// SAFETY: every parallel task writes a disjoint set of elements through it, and the buffer
// outlives the parallel loop that uses it.
unsafe impl Send for SharedMut {}
// SAFETY: as for `Send`: shared between tasks only to write disjoint elements.
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
///
/// # Safety
/// Every strided access must stay inside its buffer: `dst` valid for writes of `m` rows of
/// `n` elements at row stride `dst_rs`, `lhs` and `rhs` valid for reads of (m, k) and (k, n)
/// at their strides; no other thread may access the written elements meanwhile.
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
        // SAFETY: q and k of head hi of image bi are read inside x (same size as dqkv) at
        // their strides; this task alone writes the q and k columns of that head and image
        // (dq and dk, n rows of hd), disjoint from every other task's, through `p`.
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
mod tests {
    use super::*;
    use candle_core::{DType, Device, Var, D};

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
