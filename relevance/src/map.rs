//! The class-specific relevance map of RobustViT (`ViT/explainer.py: generate_relevance`):
//!
//! 1. `G_l = ∂(Σ_b z[b, c_b]) / ∂A_l` for every block's attention `A_l`, detached: the gradient
//!    weights are constants of the map, never differentiated themselves;
//! 2. `Ā_l = mean_heads(max(G_l ⊙ A_l, 0))`;
//! 3. rollout from the identity, `R ← R + Ā_l · R` in block order;
//! 4. the class-token row over the patch tokens, reshaped to the patch grid;
//! 5. bilinear upsampling to the input size (`align_corners=False`);
//! 6. per-image min-max normalisation.
//!
//! The map stays differentiable with respect to the attention maps (and so to the parameters).

use candle_core::{DType, Device, Tensor};
use model::{TrainForward, Vit, VitConfig};

use crate::upsample::Upsampler;
use crate::{RelevanceError, Result};

/// A relevance map ready for evaluation or pictures (no graph attached).
#[derive(Debug, Clone)]
pub struct Relevance {
    /// (B, classes), detached.
    pub logits: Tensor,
    /// The class each map explains (the given targets, or the model's prediction).
    pub targets: Vec<u32>,
    /// (B, 1, H, W), values in [0, 1], detached.
    pub map: Tensor,
    /// `true` for images whose raw map was constant: the reference divides 0 by 0 there; this
    /// crate returns an all-zero map instead and lets the caller count such images.
    pub degenerate: Vec<bool>,
}

impl Relevance {
    pub fn degenerate_count(&self) -> usize {
        self.degenerate.iter().filter(|d| **d).count()
    }
}

/// Per-image min-max normalisation with the gradient of the min and max routed to one element.
#[derive(Debug, Clone)]
pub struct Normalised {
    /// `(x - min) / (max - min)`, same shape as the input; all zeros for a degenerate image.
    pub map: Tensor,
    /// (B,) per-image minimum (live).
    pub min: Tensor,
    /// (B,) per-image maximum (live).
    pub max: Tensor,
    /// Flat index of the element whose value is the minimum (first occurrence).
    pub argmin: Vec<u32>,
    /// Flat index of the element whose value is the maximum (first occurrence).
    pub argmax: Vec<u32>,
    /// `max == min` for that image.
    pub degenerate: Vec<bool>,
}

/// Min-max normalises every image of a (B, ...) batch over all its elements.
///
/// The extremes are *gathered* at indices found on a detached copy, so the backward pass sends
/// the min/max gradient to exactly one element per image, as PyTorch's reduction does. candle's
/// own `max`/`min` backward gives the full gradient to every tied element; with bilinear
/// upsampling the extreme is typically shared by a whole border band of pixels, which would
/// multiply that gradient by the number of ties.
///
/// A constant image (`max == min`) yields zeros and no gradient instead of NaN. (A map that
/// already holds NaN stays NaN: that is a diverged model, not a constant map.)
pub fn min_max_normalise(x: &Tensor) -> Result<Normalised> {
    let b = x.dim(0)?;
    let det = x.detach().contiguous()?.reshape((b, ()))?;
    let imax: Vec<u32> = det.argmax(1)?.to_vec1()?;
    let imin: Vec<u32> = det.argmin(1)?.to_vec1()?;
    min_max_normalise_at(x, &imin, &imax)
}

/// [`min_max_normalise`] with the flat per-image indices of the extremes given (e.g. the
/// elements another implementation picked among tied extremes). The values at those indices
/// are used as min and max, and receive their gradient.
pub fn min_max_normalise_at(x: &Tensor, argmin: &[u32], argmax: &[u32]) -> Result<Normalised> {
    let b = x.dim(0)?;
    let flat = x.contiguous()?.reshape((b, ()))?;
    let n = flat.dim(1)?;
    if argmin.len() != b
        || argmax.len() != b
        || argmin.iter().chain(argmax).any(|&i| i as usize >= n)
    {
        return Err(RelevanceError::Invalid(format!(
            "min/max indices {argmin:?} / {argmax:?} do not fit {b} image(s) of {n} elements"
        )));
    }
    let imax = Tensor::from_slice(argmax, (b, 1), x.device())?;
    let imin = Tensor::from_slice(argmin, (b, 1), x.device())?;
    let max = flat.gather(&imax, 1)?; // (B, 1)
    let min = flat.gather(&imin, 1)?;
    let range = (&max - &min)?;
    let degenerate: Vec<bool> = range
        .detach()
        .flatten_all()?
        .to_vec1::<f32>()?
        .iter()
        .map(|r| *r == 0.0)
        .collect();
    let mut map = flat.broadcast_sub(&min)?;
    if degenerate.iter().any(|d| *d) {
        let flags: Vec<f32> = degenerate.iter().map(|d| f32::from(u8::from(*d))).collect();
        let flags = Tensor::from_vec(flags, (b, 1), x.device())?;
        // Divide by 1 instead of 0, then zero the image: defined values, no gradient.
        let safe = (&range + &flags)?;
        let keep = flags.affine(-1.0, 1.0)?;
        map = map.broadcast_div(&safe)?.broadcast_mul(&keep)?;
    } else {
        map = map.broadcast_div(&range)?;
    }
    Ok(Normalised {
        map: map.reshape(x.shape())?,
        min: min.squeeze(1)?,
        max: max.squeeze(1)?,
        argmin: argmin.to_vec(),
        argmax: argmax.to_vec(),
        degenerate,
    })
}

/// Checks the targets against the batch and the number of classes, or takes the model's
/// prediction (first maximum, as `torch.argmax`) when none are given.
pub(crate) fn resolve_targets(
    logits: &Tensor,
    targets: Option<&[u32]>,
    num_classes: usize,
) -> Result<Vec<u32>> {
    let b = logits.dim(0)?;
    match targets {
        None => Ok(logits.detach().argmax(1)?.to_vec1()?),
        Some(t) => {
            if t.len() != b {
                return Err(RelevanceError::TargetCount {
                    given: t.len(),
                    batch: b,
                });
            }
            if let Some((index, &class)) = t
                .iter()
                .enumerate()
                .find(|(_, c)| **c as usize >= num_classes)
            {
                return Err(RelevanceError::TargetRange {
                    index,
                    class,
                    num_classes,
                });
            }
            Ok(t.to_vec())
        }
    }
}

/// `G_l = ∂(Σ_b logits[b, targets[b]]) / ∂A_l` for every block, as detached constants.
///
/// One backward pass yields all blocks at once (the reference calls `autograd.grad` per block;
/// the values are the same). Images do not interact, so the batch sum gives per-image gradients.
pub fn attention_grads(f: &TrainForward, targets: &[u32]) -> Result<Vec<Tensor>> {
    let b = f.logits.dim(0)?;
    if targets.len() != b {
        return Err(RelevanceError::TargetCount {
            given: targets.len(),
            batch: b,
        });
    }
    let idx = Tensor::from_slice(targets, (b, 1), f.logits.device())?;
    let score = f.logits.gather(&idx, 1)?.sum_all()?;
    // The training forward's first backward pass: dL/dA only, no weight gradients.
    f.attention_grads(&score)?
        .into_iter()
        .enumerate()
        .map(|(l, g)| {
            g.ok_or_else(|| RelevanceError::MissingGradient(format!("attention map {l}")))
        })
        .collect()
}

/// `Ā = mean_heads(max(G ⊙ A, 0))`: (B, H, N, N) × (B, H, N, N) → (B, N, N).
/// Differentiable in `attn`; `grad` is a constant. On the CPU one pass forward and one backward
/// (composed, it is three (B, H, N, N) ops each way, every one with its own gradient buffer).
pub fn cam(attn: &Tensor, grad: &Tensor) -> Result<Tensor> {
    if attn.dims() != grad.dims() || attn.rank() != 4 {
        return Err(RelevanceError::Invalid(format!(
            "attention {:?} and its gradient weights {:?} must be the same (B, H, N, N)",
            attn.dims(),
            grad.dims()
        )));
    }
    let cpu_f32 = |t: &Tensor| t.device().is_cpu() && t.dtype() == DType::F32;
    if cpu_f32(attn) && cpu_f32(grad) {
        return Ok(attn.contiguous()?.apply_op1(Cam {
            grad: grad.detach().contiguous()?,
        })?);
    }
    Ok(grad.mul(attn)?.relu()?.mean(1)?)
}

/// `mean_h max(G ⊙ A, 0)` with G held as a constant.
struct Cam {
    grad: Tensor,
}

use model::ops::with_f32 as cpu_data;

impl candle_core::CustomOp1 for Cam {
    fn name(&self) -> &'static str {
        "grad-cam-mean-heads"
    }
    fn cpu_fwd(
        &self,
        s: &candle_core::CpuStorage,
        l: &candle_core::Layout,
    ) -> candle_core::Result<(candle_core::CpuStorage, candle_core::Shape)> {
        use rayon::prelude::*;
        let (b, h, n, _) = l.shape().dims4()?;
        let a = &s.as_slice::<f32>()?[l.start_offset()..][..b * h * n * n];
        let out = cpu_data(&self.grad, |g| {
            let mut out = vec![0f32; b * n * n];
            out.par_chunks_mut(n * n).enumerate().for_each(|(bi, o)| {
                for hi in 0..h {
                    let off = (bi * h + hi) * n * n;
                    let (ah, gh) = (&a[off..off + n * n], &g[off..off + n * n]);
                    for ((o, &av), &gv) in o.iter_mut().zip(ah).zip(gh) {
                        *o += (gv * av).max(0.0);
                    }
                }
                let inv = 1.0 / h as f32;
                o.iter_mut().for_each(|v| *v *= inv);
            });
            out
        })?;
        Ok((candle_core::CpuStorage::F32(out), (b, n, n).into()))
    }
    fn bwd(
        &self,
        attn: &Tensor,
        _res: &Tensor,
        dcam: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        use rayon::prelude::*;
        let (b, h, n, _) = attn.dims4()?;
        let (attn, dcam) = (attn.contiguous()?, dcam.contiguous()?);
        let inv = 1.0 / h as f32;
        let da = cpu_data(&attn, |a| {
            cpu_data(&self.grad, |g| {
                cpu_data(&dcam, |dc| {
                    let mut da = vec![0f32; b * h * n * n];
                    da.par_chunks_mut(n * n).enumerate().for_each(|(bh, d)| {
                        let off = bh * n * n;
                        let dcb = &dc[(bh / h) * n * n..(bh / h + 1) * n * n];
                        let (ah, gh) = (&a[off..off + n * n], &g[off..off + n * n]);
                        // PyTorch's relu passes the gradient where its input is > 0.
                        for (((d, &av), &gv), &dv) in d.iter_mut().zip(ah).zip(gh).zip(dcb) {
                            *d = if gv * av > 0.0 { gv * dv * inv } else { 0.0 };
                        }
                    });
                    da
                })
            })
        })???;
        Ok(Some(Tensor::from_vec(da, (b, h, n, n), attn.device())?))
    }
}

fn identity(b: usize, n: usize, device: &Device) -> Result<Tensor> {
    Ok(Tensor::eye(n, DType::F32, device)?
        .unsqueeze(0)?
        .broadcast_as((b, n, n))?
        .contiguous()?)
}

/// The full rollout after every block: `R_0 = I`, `R_l = R_{l-1} + Ā_l · R_{l-1}`.
pub fn rollout_full(cams: &[Tensor]) -> Result<Vec<Tensor>> {
    let mut out: Vec<Tensor> = Vec::with_capacity(cams.len());
    for c in cams {
        let r = match out.last() {
            // Ā · I = Ā exactly, so the first product is skipped.
            None => {
                let (b, n, _) = c.dims3()?;
                (identity(b, n, c.device())? + c)?
            }
            Some(r) => (r + c.matmul(r)?)?,
        };
        out.push(r);
    }
    Ok(out)
}

/// The class-token row of the final rollout, (B, N), without forming the N × N products:
/// `e₀ᵀ (I + Ā_L) ⋯ (I + Ā_1)` evaluated left to right costs N² per block instead of N³.
/// Equal to `rollout_full(cams).last()[:, 0, :]` up to float rounding.
pub fn rollout_cls(cams: &[Tensor]) -> Result<Tensor> {
    let last = cams
        .last()
        .ok_or_else(|| RelevanceError::Invalid("rollout of zero blocks".into()))?;
    let (b, n, _) = last.dims3()?;
    let mut e0 = vec![0f32; n];
    e0[0] = 1.0;
    let e0 = Tensor::from_vec(e0, (1, 1, n), last.device())?;
    // e₀ᵀ + e₀ᵀ Ā_L is e₀ᵀ plus the class-token row of Ā_L.
    let mut v = last.narrow(1, 0, 1)?.contiguous()?.broadcast_add(&e0)?;
    for c in cams[..cams.len() - 1].iter().rev() {
        v = (&v + v.matmul(c)?)?;
    }
    debug_assert_eq!(v.dims(), &[b, 1, n]);
    Ok(v.squeeze(1)?)
}

/// What a relevance computation produces besides the final map.
pub struct MapGraph {
    pub cams: Vec<Tensor>,
    pub rollout: Vec<Tensor>,
    pub tokens: Tensor,
    pub grid: Tensor,
    pub upsampled: Tensor,
    pub norm: Normalised,
}

/// From attention maps and their gradient weights to the normalised map. `attn` may be live
/// (training) or detached (evaluation). `full` keeps every intermediate rollout matrix. Public
/// for custom objectives and for timing the parts of a step (`train/examples/step_phases.rs`).
pub fn map_from_attention(
    cfg: &VitConfig,
    attn: &[Tensor],
    grads: &[Tensor],
    full: bool,
) -> Result<MapGraph> {
    if attn.len() != grads.len() || attn.is_empty() {
        return Err(RelevanceError::Invalid(format!(
            "{} attention maps but {} gradient maps",
            attn.len(),
            grads.len()
        )));
    }
    for (l, (a, g)) in attn.iter().zip(grads).enumerate() {
        if a.dims() != g.dims() {
            return Err(RelevanceError::Invalid(format!(
                "block {l}: attention has shape {:?} but its gradient weights {:?}",
                a.dims(),
                g.dims()
            )));
        }
    }
    let cams = attn
        .iter()
        .zip(grads)
        .map(|(a, g)| cam(a, g))
        .collect::<Result<Vec<_>>>()?;
    let (rollout, cls_row) = if full {
        let r = rollout_full(&cams)?;
        let row = r.last().expect("non-empty").narrow(1, 0, 1)?.squeeze(1)?;
        (r, row)
    } else {
        (Vec::new(), rollout_cls(&cams)?)
    };
    let tokens = patch_tokens(&cls_row)?;
    let (grid, upsampled, norm) = tokens_to_map(cfg, &tokens)?;
    Ok(MapGraph {
        cams,
        rollout,
        tokens,
        grid,
        upsampled,
        norm,
    })
}

/// The class-token row (B, N) without the class-token column: the patch tokens (B, N-1).
pub(crate) fn patch_tokens(cls_row: &Tensor) -> Result<Tensor> {
    let n = cls_row.dim(1)?;
    Ok(cls_row.narrow(1, 1, n - 1)?.contiguous()?)
}

/// Patch tokens (B, grid²) → grid (B, 1, g, g), upsampled and normalised map (B, 1, H, W).
pub(crate) fn tokens_to_map(
    cfg: &VitConfig,
    tokens: &Tensor,
) -> Result<(Tensor, Tensor, Normalised)> {
    let (b, n) = tokens.dims2()?;
    let g = cfg.grid();
    if n != g * g {
        return Err(RelevanceError::Invalid(format!(
            "{n} patch tokens do not form a {g}x{g} patch grid"
        )));
    }
    let grid = tokens.contiguous()?.reshape((b, 1, g, g))?;
    let up = Upsampler::with_scale((g, g), cfg.patch_size, tokens.device())?;
    let upsampled = up.forward(&grid)?;
    let norm = min_max_normalise(&upsampled)?;
    Ok((grid, upsampled, norm))
}

/// Every intermediate of the relevance map, live in the autograd graph (for tests, inspection
/// and custom objectives). The full N × N rollout after each block is kept.
pub struct RelevanceParts {
    /// (B, classes), live.
    pub logits: Tensor,
    pub targets: Vec<u32>,
    /// The training forward pass (attention maps and probes).
    pub forward: TrainForward,
    /// `G_l`, (B, heads, N, N), constants.
    pub attn_grad: Vec<Tensor>,
    /// `Ā_l`, (B, N, N).
    pub cam: Vec<Tensor>,
    /// `R` after each block, (B, N, N).
    pub rollout: Vec<Tensor>,
    /// `R[:, 0, 1:]`, (B, N-1).
    pub tokens: Tensor,
    /// (B, 1, grid, grid).
    pub grid: Tensor,
    /// (B, 1, H, W), before normalisation.
    pub upsampled: Tensor,
    /// The normalised map (`normalised.map`, (B, 1, H, W)) with its extremes.
    pub normalised: Normalised,
}

impl RelevanceParts {
    /// The normalised relevance map, (B, 1, H, W), live.
    pub fn relevance(&self) -> &Tensor {
        &self.normalised.map
    }
}

/// The relevance map of `x` with all intermediates (see [`RelevanceParts`]). `targets` are the
/// classes to explain, one per image; `None` explains the model's own prediction.
pub fn relevance_parts(vit: &Vit, x: &Tensor, targets: Option<&[u32]>) -> Result<RelevanceParts> {
    let cfg = vit.config();
    let forward = vit.forward_train(x)?;
    let targets = resolve_targets(&forward.logits, targets, cfg.num_classes)?;
    let attn_grad = attention_grads(&forward, &targets)?;
    let m = map_from_attention(cfg, &forward.attn, &attn_grad, true)?;
    Ok(RelevanceParts {
        logits: forward.logits.clone(),
        targets,
        forward,
        attn_grad,
        cam: m.cams,
        rollout: m.rollout,
        tokens: m.tokens,
        grid: m.grid,
        upsampled: m.upsampled,
        normalised: m.norm,
    })
}

/// The relevance map of `x` for evaluation and pictures: (B, 1, H, W) in [0, 1], detached.
/// `targets` are the classes to explain; `None` explains the model's own prediction (as the
/// segmentation benchmark does).
pub fn relevance_map(vit: &Vit, x: &Tensor, targets: Option<&[u32]>) -> Result<Relevance> {
    let cfg = vit.config();
    let f = vit.forward_train(x)?;
    let targets = resolve_targets(&f.logits, targets, cfg.num_classes)?;
    let grads = attention_grads(&f, &targets)?;
    // Detached attention: nothing after this point needs a graph.
    let attn: Vec<Tensor> = f.attn.iter().map(|a| a.detach()).collect();
    let m = map_from_attention(cfg, &attn, &grads, false)?;
    Ok(Relevance {
        logits: f.logits.detach(),
        targets,
        map: m.norm.map,
        degenerate: m.norm.degenerate,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(v: &[f32], shape: &[usize]) -> Tensor {
        Tensor::from_slice(v, shape, &Device::Cpu).unwrap()
    }

    #[test]
    fn row_rollout_equals_full_rollout() {
        let dev = Device::Cpu;
        let n = 5;
        let mk = |s: f32| {
            let v: Vec<f32> = (0..2 * n * n)
                .map(|i| ((i as f32 * s).sin() * 0.5).abs())
                .collect();
            Tensor::from_vec(v, (2, n, n), &dev).unwrap()
        };
        let cams = [mk(0.37), mk(1.1), mk(2.3)];
        let full = rollout_full(&cams).unwrap();
        let row = rollout_cls(&cams).unwrap();
        let want = full[2].narrow(1, 0, 1).unwrap().squeeze(1).unwrap();
        let d = (row - want)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(d < 1e-5, "{d}");
        // By hand for one block: R_1 = I + Ā_1.
        let r1: Vec<f32> = full[0].flatten_all().unwrap().to_vec1().unwrap();
        let c1: Vec<f32> = cams[0].flatten_all().unwrap().to_vec1().unwrap();
        assert_eq!(r1[0], c1[0] + 1.0);
        assert_eq!(r1[1], c1[1]);
    }

    #[test]
    fn cam_is_head_mean_of_positive_part() {
        // B=1, heads=2, N=1.
        let a = t(&[0.5, 0.25], &[1, 2, 1, 1]);
        let g = t(&[2.0, -4.0], &[1, 2, 1, 1]);
        let c: Vec<f32> = cam(&a, &g)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        assert_eq!(c, [0.5]); // (max(1, 0) + max(-1, 0)) / 2
    }

    /// The gradient PyTorch gives for `sum(w ⊙ (y − y[jmin]) / (y[jmax] − y[jmin]))` with
    /// `y = U x Uᵀ`: one element carries each extreme's gradient.
    fn torch_grad(x: &[f64], g: usize, s: usize, w: &[f64]) -> Vec<f64> {
        let n = g * s;
        let u: Vec<f64> = crate::interpolation_matrix(g, n, Some(s as f64))
            .iter()
            .map(|v| f64::from(*v))
            .collect();
        let mut y = vec![0f64; n * n];
        for p in 0..n {
            for q in 0..n {
                for a in 0..g {
                    for b in 0..g {
                        y[p * n + q] += u[p * g + a] * x[a * g + b] * u[q * g + b];
                    }
                }
            }
        }
        let first = |better: &dyn Fn(f64, f64) -> bool| {
            (0..n * n).fold(0, |k, i| if better(y[i], y[k]) { i } else { k })
        };
        let (jmax, jmin) = (first(&|a, b| a > b), first(&|a, b| a < b));
        let (mx, mn) = (y[jmax], y[jmin]);
        let r = mx - mn;
        let mut gy: Vec<f64> = w.iter().map(|wi| wi / r).collect();
        gy[jmax] += -(0..n * n).map(|i| w[i] * (y[i] - mn)).sum::<f64>() / (r * r);
        gy[jmin] += (0..n * n).map(|i| w[i] * (y[i] - mx)).sum::<f64>() / (r * r);
        let mut gx = vec![0f64; g * g];
        for p in 0..n {
            for q in 0..n {
                for a in 0..g {
                    for b in 0..g {
                        gx[a * g + b] += u[p * g + a] * gy[p * n + q] * u[q * g + b];
                    }
                }
            }
        }
        gx
    }

    #[test]
    fn tied_extremes_get_the_gradient_once() {
        let dev = Device::Cpu;
        // The corner cells are the extremes; upsampling ×4 copies each into a 2×2 border
        // block, so both the max and the min are attained by 4 pixels.
        let xv = [3.0f32, 1.0, 2.0, 0.5, 1.5, 2.5, 1.0, 2.0, 0.0];
        let (g, s) = (3, 4);
        let n = g * s;
        let w: Vec<f32> = (0..n * n)
            .map(|i| ((i * 37) % 11) as f32 / 10.0 - 0.4)
            .collect();
        let x = candle_core::Var::from_slice(&xv, (1, 1, g, g), &dev).unwrap();
        let wt = Tensor::from_slice(&w, (1, 1, n, n), &dev).unwrap();
        let up = crate::Upsampler::with_scale((g, g), s, &dev).unwrap();
        let y = up.forward(x.as_tensor()).unwrap();
        let yv: Vec<f32> = y.flatten_all().unwrap().to_vec1().unwrap();
        assert_eq!(yv.iter().filter(|v| **v == 3.0).count(), 4);
        assert_eq!(yv.iter().filter(|v| **v == 0.0).count(), 4);

        let nrm = min_max_normalise(&y).unwrap();
        assert_eq!((nrm.argmax[0], nrm.argmin[0]), (0, (n * n - n - 2) as u32));
        let loss = (nrm.map * &wt).unwrap().sum_all().unwrap();
        let got: Vec<f32> = loss
            .backward()
            .unwrap()
            .get(x.as_tensor())
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let want = torch_grad(
            &xv.map(f64::from),
            g,
            s,
            &w.iter().map(|v| f64::from(*v)).collect::<Vec<_>>(),
        );
        let scale = want.iter().fold(0f64, |m, v| m.max(v.abs()));
        for (a, b) in got.iter().zip(&want) {
            assert!(
                (f64::from(*a) - b).abs() < 1e-5 * scale,
                "{got:?} vs {want:?}"
            );
        }

        // candle's own max/min backward hands the full gradient to all four tied pixels.
        let naive = {
            let flat = y.reshape((1, n * n)).unwrap();
            let mx = flat.max_keepdim(1).unwrap();
            let mn = flat.min_keepdim(1).unwrap();
            flat.broadcast_sub(&mn)
                .unwrap()
                .broadcast_div(&(mx - &mn).unwrap())
                .unwrap()
        };
        let wf = wt.reshape((1, n * n)).unwrap();
        let gn: Vec<f32> = (naive * wf)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap()
            .get(x.as_tensor())
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let dev_naive = gn
            .iter()
            .zip(&want)
            .fold(0f64, |m, (a, b)| m.max((f64::from(*a) - b).abs()));
        assert!(dev_naive > 0.1 * scale, "{dev_naive} vs scale {scale}");
    }

    #[test]
    fn constant_map_is_zero_not_nan() {
        let dev = Device::Cpu;
        let v = [0.25f32, 0.25, 0.25, 0.25, 1.0, 3.0, 2.0, 1.0];
        let x = candle_core::Var::from_slice(&v, (2, 1, 2, 2), &dev).unwrap();
        let nrm = min_max_normalise(x.as_tensor()).unwrap();
        assert_eq!(nrm.degenerate, [true, false]);
        let m: Vec<f32> = nrm.map.flatten_all().unwrap().to_vec1().unwrap();
        assert_eq!(m, [0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.5, 0.0]);
        let g = nrm
            .map
            .sqr()
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let g: Vec<f32> = g
            .get(x.as_tensor())
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        assert!(g.iter().all(|v| v.is_finite()), "{g:?}");
        assert_eq!(&g[..4], &[0.0; 4]);
        // Image 1: d/dx of Σ r² with r = (x − 1)/2; the max (index 1) also carries −Σ 2r·(x−1)/4.
        assert_eq!(g[6], 0.5);
    }
}
