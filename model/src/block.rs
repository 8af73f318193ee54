//! A transformer block on the CPU as three graph nodes with hand-written backward passes:
//!
//! 1. `AttnMap`: `x → A = softmax(q kᵀ · scale)` with `qkv = LN1(x) W_qkvᵀ + b`;
//! 2. `AttnOut`: `(A, x) → x1 = x + (A v) W_projᵀ + b`;
//! 3. `Mlp`: `x1 → x2 = x1 + fc2(GELU(fc1(LN2(x1))))`.
//!
//! Built from candle ops (or one custom op per layer), a block is a dozen nodes, and candle's
//! backward allocates a zero-filled buffer and adds into it for every gradient edge; the MLP's
//! hidden activations alone (4·D per token) cross three of them. Here the only edges candle sees
//! are x, A and x1. The attention map stays a tensor of its own, so the relevance loss can
//! still differentiate through it.
//!
//! The parameters are not inputs of these nodes: their gradients go to the training forward's
//! `GradSink`, which [`crate::Grads`] merges with candle's gradient store (the contract is
//! written in [`crate::grads`]).
//! The nodes keep what their weight gradients need (the layer norms' outputs, qkv, A v, fc1's
//! output and its GELU): recomputing the layer norms and GELU instead saved ~170 MiB of a
//! ViT-S step but cost ~3 % of its time, and the step's memory is half of PyTorch's either way.

use crate::grads::{GradSink, GradSlot};
use crate::kernels;
use crate::ops::attention::{apply_backward, apply_forward, probs_backward, probs_forward, Heads};
use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Tensor};
use std::sync::{Arc, Mutex, OnceLock};

/// A linear layer's weights and their parameter names.
#[derive(Clone)]
pub(crate) struct LinearRef {
    pub w: Tensor,
    pub b: Option<Tensor>,
    pub w_name: String,
    pub b_name: String,
}

/// A layer norm's weights and their parameter names.
#[derive(Clone)]
pub(crate) struct NormRef {
    pub w: Tensor,
    pub b: Tensor,
    pub eps: f32,
    pub w_name: String,
    pub b_name: String,
}

/// Everything one block needs.
#[derive(Clone)]
pub(crate) struct BlockRef {
    pub norm1: NormRef,
    pub qkv: LinearRef,
    pub proj: LinearRef,
    pub norm2: NormRef,
    pub fc1: LinearRef,
    pub fc2: LinearRef,
    pub heads: usize,
    pub scale: f32,
}

use crate::ops::with_f32 as data;

fn storage_slice<'a>(s: &'a CpuStorage, l: &Layout) -> Result<&'a [f32]> {
    if !l.is_contiguous() {
        candle_core::bail!("fused block: input is not contiguous");
    }
    Ok(&s.as_slice::<f32>()?[l.start_offset()..][..l.shape().elem_count()])
}

fn lock<T>(m: &Mutex<T>) -> Result<std::sync::MutexGuard<'_, T>> {
    m.lock()
        .map_err(|_| candle_core::Error::Msg("fused block: poisoned state".into()))
}

/// Whether the fused block can run on this input (CPU, f32).
pub(crate) fn available(x: &Tensor, blk: &BlockRef) -> bool {
    use crate::ops::cpu_f32;
    cpu_f32(x) && cpu_f32(&blk.qkv.w) && cpu_f32(&blk.fc1.w) && x.rank() == 3
}

/// State the attention map node shares with the attention output node: qkv from the forward,
/// and the v columns of dqkv from the output node's backward (which candle runs first).
#[derive(Default)]
struct AttnShared {
    qkv: OnceLock<Vec<f32>>,
    dqkv: Mutex<Option<Vec<f32>>>,
}

struct AttnMap {
    /// LN1(x), kept for the qkv weight gradient.
    ln: OnceLock<Vec<f32>>,
    norm: NormRef,
    qkv: LinearRef,
    heads: usize,
    scale: f32,
    shared: Arc<AttnShared>,
    grads: GradSink,
}

impl CustomOp1 for AttnMap {
    fn name(&self) -> &'static str {
        "fused-block-attention-map"
    }
    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let (b, n, d) = l.shape().dims3()?;
        let x = storage_slice(s, l)?;
        let g = Heads::from_width(b, n, self.heads, d);
        let ln = data(&self.norm.w, |w| {
            data(&self.norm.b, |bias| {
                kernels::layer_norm_forward(x, w, bias, self.norm.eps)
            })
        })??;
        let qkv = self.qkv.apply(&ln, None, b * n, d)?;
        let a = probs_forward(&qkv, g, self.scale);
        let twice = |_| candle_core::Error::Msg("fused block: forward ran twice".into());
        self.shared.qkv.set(qkv).map_err(twice)?;
        self.ln.set(ln).map_err(twice)?;
        Ok((CpuStorage::F32(a), Shape::from((b, g.h, n, n))))
    }
    fn bwd(&self, x: &Tensor, a: &Tensor, da: &Tensor) -> Result<Option<Tensor>> {
        let (b, n, d) = x.dims3()?;
        let m = b * n;
        let g = Heads::from_width(b, n, self.heads, d);
        let qkv = self.shared.qkv.get().expect("forward ran before backward");
        // v columns from the output node's backward (zero if it was not reached).
        let mut dqkv = lock(&self.shared.dqkv)?
            .take()
            .unwrap_or_else(|| vec![0f32; qkv.len()]);
        data(a, |a| {
            data(da, |da| {
                probs_backward(qkv, a, da, g, self.scale, &mut dqkv)
            })
        })??;
        let params = self.grads.params_wanted();
        let dx = data(x, |x| -> Result<Vec<f32>> {
            data(&self.norm.w, |nw| -> Result<Vec<f32>> {
                let ln = self.ln.get().expect("forward ran before backward");
                let (dln, p) = data(&self.qkv.w, |w| {
                    kernels::linear_backward(&dqkv, ln, w, (m, d, 3 * d), params)
                })?;
                if let Some((dw, db)) = p {
                    put_linear(&self.grads, &self.qkv, dw, db)?;
                }
                let (dx, p) = kernels::layer_norm_backward(x, nw, &dln, self.norm.eps, params);
                if let Some((dw, db)) = p {
                    put_norm(&self.grads, &self.norm, dw, db)?;
                }
                Ok(dx)
            })?
        })??;
        Ok(Some(Tensor::from_vec(dx, x.shape(), x.device())?))
    }
}

fn put_linear(grads: &GradSink, l: &LinearRef, dw: Vec<f32>, db: Vec<f32>) -> Result<()> {
    grads.put(&l.w_name, dw, &l.w)?;
    if let Some(b) = &l.b {
        grads.put(&l.b_name, db, b)?;
    }
    Ok(())
}

fn put_norm(grads: &GradSink, n: &NormRef, dw: Vec<f32>, db: Vec<f32>) -> Result<()> {
    grads.put(&n.w_name, dw, &n.w)?;
    grads.put(&n.b_name, db, &n.b)
}

impl LinearRef {
    /// `x Wᵀ + b (+ residual)` for x (m, k) with the layer's weights.
    fn apply(&self, x: &[f32], residual: Option<&[f32]>, m: usize, k: usize) -> Result<Vec<f32>> {
        let n = self.w.dim(0)?;
        data(&self.w, |w| match &self.b {
            Some(b) => data(b, |b| {
                kernels::linear_forward(x, w, Some(b), residual, m, k, n)
            }),
            None => Ok(kernels::linear_forward(x, w, None, residual, m, k, n)),
        })?
    }
}

struct AttnOut {
    proj: LinearRef,
    heads: usize,
    /// Output rows per image: N, or 1 in the last block, whose other rows nothing reads.
    queries: usize,
    shared: Arc<AttnShared>,
    /// The heads' outputs A v, kept for the projection's weight gradient.
    o: OnceLock<Vec<f32>>,
    slot: Option<GradSlot>,
    grads: GradSink,
}

impl CustomOp2 for AttnOut {
    fn name(&self) -> &'static str {
        "fused-block-attention-out"
    }
    fn cpu_fwd(
        &self,
        sa: &CpuStorage,
        la: &Layout,
        sx: &CpuStorage,
        lx: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (b, n, d) = lx.shape().dims3()?;
        let (a, x) = (storage_slice(sa, la)?, storage_slice(sx, lx)?);
        let g = Heads::from_width(b, n, self.heads, d);
        let qkv = self
            .shared
            .qkv
            .get()
            .expect("the attention map node ran first");
        let q = self.queries;
        let o = apply_forward(a, qkv, g, q);
        let x1 = if q == n {
            self.proj.apply(&o, Some(x), b * n, d)?
        } else {
            let rows: Vec<f32> = x
                .chunks_exact(n * d)
                .flat_map(|xi| &xi[..q * d])
                .copied()
                .collect();
            self.proj.apply(&o, Some(&rows), b * q, d)?
        };
        self.o
            .set(o)
            .map_err(|_| candle_core::Error::Msg("fused block: forward ran twice".into()))?;
        Ok((CpuStorage::F32(x1), Shape::from((b, q, d))))
    }
    fn bwd(
        &self,
        a: &Tensor,
        x: &Tensor,
        _x1: &Tensor,
        dx1: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (b, n, d) = x.dims3()?;
        let g = Heads::from_width(b, n, self.heads, d);
        let qkv = self.shared.qkv.get().expect("forward ran before backward");
        let o = self.o.get().expect("forward ran before backward");
        let params = self.grads.params_wanted();
        let q = self.queries;
        let dx1 = dx1.contiguous()?;
        let (da, dqkv) = data(&dx1, |gy| -> Result<(Vec<f32>, Vec<f32>)> {
            let (dout, p) = data(&self.proj.w, |w| {
                kernels::linear_backward(gy, o, w, (b * q, d, d), params)
            })?;
            if let Some((dw, db)) = p {
                put_linear(&self.grads, &self.proj, dw, db)?;
            }
            let mut dqkv = vec![0f32; qkv.len()];
            let da = data(a, |a| apply_backward(a, qkv, &dout, g, q, &mut dqkv))?;
            Ok((da, dqkv))
        })??;
        *lock(&self.shared.dqkv)? = Some(dqkv);
        let da = Tensor::from_vec(da, a.shape(), a.device())?;
        if let Some(slot) = &self.slot {
            slot.offer(&da);
        }
        // The residual passes the gradient through unchanged (to the queried rows).
        let dx = if q == n {
            dx1
        } else {
            let mut dx = vec![0f32; b * n * d];
            data(&dx1, |gy| {
                for (dxi, gi) in dx.chunks_exact_mut(n * d).zip(gy.chunks_exact(q * d)) {
                    dxi[..q * d].copy_from_slice(gi);
                }
            })?;
            Tensor::from_vec(dx, x.shape(), x.device())?
        };
        Ok((Some(da), Some(dx)))
    }
}

struct Mlp {
    norm: NormRef,
    fc1: LinearRef,
    fc2: LinearRef,
    /// LN2(x1), fc1's output u and GELU(u), kept for the backward.
    ln: OnceLock<Vec<f32>>,
    u: OnceLock<Vec<f32>>,
    h: OnceLock<Vec<f32>>,
    grads: GradSink,
}

impl CustomOp1 for Mlp {
    fn name(&self) -> &'static str {
        "fused-block-mlp"
    }
    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let (b, n, d) = l.shape().dims3()?;
        let x = storage_slice(s, l)?;
        let hidden = self.fc1.w.dim(0)?;
        let ln = data(&self.norm.w, |w| {
            data(&self.norm.b, |bias| {
                kernels::layer_norm_forward(x, w, bias, self.norm.eps)
            })
        })??;
        let u = self.fc1.apply(&ln, None, b * n, d)?;
        let h = kernels::gelu(&u);
        let y = self.fc2.apply(&h, Some(x), b * n, hidden)?;
        let twice = |_| candle_core::Error::Msg("fused block: forward ran twice".into());
        self.ln.set(ln).map_err(twice)?;
        self.u.set(u).map_err(twice)?;
        self.h.set(h).map_err(twice)?;
        Ok((CpuStorage::F32(y), l.shape().clone()))
    }
    fn bwd(&self, x: &Tensor, _y: &Tensor, dy: &Tensor) -> Result<Option<Tensor>> {
        let (b, n, d) = x.dims3()?;
        let m = b * n;
        let hidden = self.fc1.w.dim(0)?;
        let u = self.u.get().expect("forward ran before backward");
        let params = self.grads.params_wanted();
        let dx = data(x, |x| {
            data(dy, |gy| -> Result<Vec<f32>> {
                let h = self.h.get().expect("forward ran before backward");
                let (dh, p) = data(&self.fc2.w, |w| {
                    kernels::linear_backward(gy, h, w, (m, hidden, d), params)
                })?;
                if let Some((dw, db)) = p {
                    put_linear(&self.grads, &self.fc2, dw, db)?;
                }
                let du = kernels::gelu_backward(u, &dh);
                drop(dh);
                let nw = &self.norm.w;
                let ln = self.ln.get().expect("forward ran before backward");
                let (dln, p) = data(&self.fc1.w, |w| {
                    kernels::linear_backward(&du, ln, w, (m, d, hidden), params)
                })?;
                if let Some((dw, db)) = p {
                    put_linear(&self.grads, &self.fc1, dw, db)?;
                }
                let (mut dx, p) = data(nw, |w| {
                    kernels::layer_norm_backward(x, w, &dln, self.norm.eps, params)
                })?;
                if let Some((dw, db)) = p {
                    put_norm(&self.grads, &self.norm, dw, db)?;
                }
                // The residual's gradient joins the branch's.
                dx.iter_mut().zip(gy).for_each(|(a, g)| *a += g);
                Ok(dx)
            })?
        })??;
        Ok(Some(Tensor::from_vec(dx, x.shape(), x.device())?))
    }
}

/// One block as three graph nodes: returns the block's output for the first `queries` tokens
/// (all N, or the class token alone in the last block) and its attention map (always N × N:
/// every row feeds the relevance map). With a `slot`, the first backward pass leaves dL/dA in
/// it.
pub(crate) fn forward(
    blk: &BlockRef,
    x: &Tensor,
    queries: usize,
    slot: Option<&GradSlot>,
    grads: &GradSink,
) -> Result<(Tensor, Tensor)> {
    let x = x.contiguous()?;
    let n = x.dim(1)?;
    if queries == 0 || queries > n {
        candle_core::bail!("fused block: {queries} queries of {n} tokens");
    }
    let shared = Arc::new(AttnShared::default());
    let a = x.apply_op1(AttnMap {
        ln: OnceLock::new(),
        norm: blk.norm1.clone(),
        qkv: blk.qkv.clone(),
        heads: blk.heads,
        scale: blk.scale,
        shared: shared.clone(),
        grads: grads.clone(),
    })?;
    let x1 = a.apply_op2(
        &x,
        AttnOut {
            proj: blk.proj.clone(),
            heads: blk.heads,
            queries,
            shared,
            o: OnceLock::new(),
            slot: slot.cloned(),
            grads: grads.clone(),
        },
    )?;
    let x2 = x1.apply_op1(Mlp {
        norm: blk.norm2.clone(),
        fc1: blk.fc1.clone(),
        fc2: blk.fc2.clone(),
        ln: OnceLock::new(),
        u: OnceLock::new(),
        h: OnceLock::new(),
        grads: grads.clone(),
    })?;
    Ok((x2, a))
}
