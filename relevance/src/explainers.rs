//! Explanation methods compared in the segmentation test and the pictures. All return a
//! [`Relevance`]: (B, 1, H, W) maps, min-max normalised per image, upsampled exactly like the
//! paper's relevance map, so that only the explanation rule differs.

use candle_core::{DType, Tensor};
use model::Vit;
use serde::{Deserialize, Serialize};

use crate::map::{
    attention_grads, patch_tokens, relevance_map, resolve_targets, tokens_to_map, Relevance,
};
use crate::{RelevanceError, Result};

/// An explanation method.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Explainer {
    /// The paper's map: gradient-weighted attention of every block, rolled out
    /// ([`relevance_map`]). Class-specific.
    Relevance,
    /// The last block's attention from the class token to the patches, averaged over heads.
    /// Class-agnostic.
    RawAttention,
    /// Attention rollout (Abnar & Zuidema 2020): head-averaged attention plus the residual
    /// identity, `0.5·A + 0.5·I` with rows re-normalised, multiplied over all blocks; the class
    /// token's row. Class-agnostic.
    Rollout,
    /// GradCAM on the last block's attention, as the GradCAM baseline of Chefer et al. (CVPR
    /// 2021): each head's class-token-to-patch attention weighted by the mean of its gradient
    /// over those patches, averaged over heads, then clamped at zero. Class-specific.
    GradCam,
}

impl Explainer {
    pub const ALL: [Explainer; 4] = [
        Explainer::Relevance,
        Explainer::RawAttention,
        Explainer::Rollout,
        Explainer::GradCam,
    ];

    /// The name used on command lines and in result files.
    pub fn name(self) -> &'static str {
        match self {
            Explainer::Relevance => "relevance",
            Explainer::RawAttention => "raw-attention",
            Explainer::Rollout => "rollout",
            Explainer::GradCam => "grad-cam",
        }
    }

    /// Whether the map depends on the class to explain.
    pub fn is_class_specific(self) -> bool {
        matches!(self, Explainer::Relevance | Explainer::GradCam)
    }
}

impl std::fmt::Display for Explainer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Explainer {
    type Err = RelevanceError;
    fn from_str(s: &str) -> Result<Self> {
        Explainer::ALL
            .into_iter()
            .find(|e| e.name() == s)
            .ok_or_else(|| {
                let known: Vec<&str> = Explainer::ALL.iter().map(|e| e.name()).collect();
                RelevanceError::Invalid(format!(
                    "unknown explainer `{s}`; known: {}",
                    known.join(", ")
                ))
            })
    }
}

/// Explains `x` with method `e`. `targets` are the classes to explain (`None`: the model's
/// prediction); class-agnostic methods ignore them but still report them in `targets`.
pub fn explain(vit: &Vit, x: &Tensor, e: Explainer, targets: Option<&[u32]>) -> Result<Relevance> {
    match e {
        Explainer::Relevance => relevance_map(vit, x, targets),
        Explainer::RawAttention => raw_attention(vit, x, targets),
        Explainer::Rollout => attention_rollout(vit, x, targets),
        Explainer::GradCam => grad_cam(vit, x, targets),
    }
}

fn finish(vit: &Vit, logits: &Tensor, targets: Vec<u32>, tokens: &Tensor) -> Result<Relevance> {
    let (_, _, norm) = tokens_to_map(vit.config(), tokens)?;
    Ok(Relevance {
        logits: logits.detach(),
        targets,
        map: norm.map.detach(),
        degenerate: norm.degenerate,
    })
}

/// Last-block attention of the class token to every patch, averaged over heads.
pub fn raw_attention(vit: &Vit, x: &Tensor, targets: Option<&[u32]>) -> Result<Relevance> {
    let f = vit.forward_train(x)?;
    let targets = resolve_targets(&f.logits, targets, vit.config().num_classes)?;
    let last = f
        .attn
        .last()
        .expect("a model has at least one block")
        .detach();
    let row = last.mean(1)?.narrow(1, 0, 1)?.squeeze(1)?; // (B, N)
    finish(vit, &f.logits, targets, &patch_tokens(&row)?)
}

/// Attention rollout: `R = Â_L ⋯ Â_1`, `Â_l = rownorm(0.5·mean_heads(A_l) + 0.5·I)`; the class
/// token's row over the patches. Computed as a row vector (N² per block).
pub fn attention_rollout(vit: &Vit, x: &Tensor, targets: Option<&[u32]>) -> Result<Relevance> {
    let f = vit.forward_train(x)?;
    let targets = resolve_targets(&f.logits, targets, vit.config().num_classes)?;
    let mut v: Option<Tensor> = None;
    for a in f.attn.iter().rev() {
        let m = a.detach().mean(1)?; // (B, N, N)
        let (b, n, _) = m.dims3()?;
        let eye = Tensor::eye(n, DType::F32, m.device())?
            .unsqueeze(0)?
            .broadcast_as((b, n, n))?;
        let m = ((m * 0.5)? + (eye * 0.5)?)?;
        let m = m.broadcast_div(&m.sum_keepdim(2)?)?.contiguous()?;
        v = Some(match v {
            None => m.narrow(1, 0, 1)?.contiguous()?,
            Some(v) => v.matmul(&m)?,
        });
    }
    let row = v.expect("a model has at least one block").squeeze(1)?;
    finish(vit, &f.logits, targets, &patch_tokens(&row)?)
}

/// GradCAM on the last block's attention (see [`Explainer::GradCam`]).
pub fn grad_cam(vit: &Vit, x: &Tensor, targets: Option<&[u32]>) -> Result<Relevance> {
    let f = vit.forward_train(x)?;
    let targets = resolve_targets(&f.logits, targets, vit.config().num_classes)?;
    let grads = attention_grads(&f, &targets)?;
    let a = f
        .attn
        .last()
        .expect("a model has at least one block")
        .detach();
    let g = grads.last().expect("one gradient per block");
    let n = a.dim(2)?;
    // Class-token row over the patches, (B, heads, N-1).
    let cls =
        |t: &Tensor| -> Result<Tensor> { Ok(t.narrow(2, 0, 1)?.squeeze(2)?.narrow(2, 1, n - 1)?) };
    let (a, g) = (cls(&a)?, cls(g)?);
    let weights = g.mean_keepdim(2)?; // (B, heads, 1)
    let tokens = a.broadcast_mul(&weights)?.mean(1)?.relu()?;
    finish(vit, &f.logits, targets, &tokens)
}
