//! The RobustViT objective (`imagenet_finetune.py: train`, robustvit.md §3.3):
//!
//! * `L_bg = mean((r' ⊙ rev)²)`: relevance outside the object;
//! * `L_fg = mean((r' ⊙ s − s)²)`: missing relevance inside the object;
//! * `L_cls = CE(z / T, argmax z)`: confidence in the model's *own* current top-1;
//! * `L = λ_seg (λ_bg L_bg + λ_fg L_fg) + λ_cls L_cls`.
//!
//! One forward pass serves both the relevance map and the classification term (the reference
//! runs a second, identical forward pass for the latter; with zero dropout the values and
//! gradients are the same).

use candle_core::Tensor;
use model::{TrainForward, Vit};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

use crate::map::{attention_grads, map_from_attention, resolve_targets};
use crate::{RelevanceError, Result};

/// How the background ("reverse") mask is formed from a possibly fractional mask `s`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MaskMode {
    /// As the reference code: 1 → 0, 0 → 1, and fractional edge pixels keep their value `s`
    /// (not `1 − s`). Bilinear mask resizing makes such pixels common during training.
    #[default]
    Paper,
    /// `1 − s`.
    Binary,
}

/// Weights of the objective. `Default` gives the paper's values (temperature 1).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct LossConfig {
    /// Weight of the segmentation part (`λ_seg`, 0.8).
    pub lambda_seg: f64,
    /// Weight of the classification part (`λ_acc` in the reference, 0.2).
    pub lambda_cls: f64,
    /// Weight of the background term inside the segmentation part (2).
    pub lambda_bg: f64,
    /// Weight of the foreground term inside the segmentation part (0.3).
    pub lambda_fg: f64,
    /// Logits are divided by it before the cross-entropy: 1 except DeiT-B (0.65) and
    /// DeiT-S (0.55) in the reference runs.
    pub temperature: f64,
    pub mask_mode: MaskMode,
}

impl Default for LossConfig {
    fn default() -> Self {
        Self {
            lambda_seg: 0.8,
            lambda_cls: 0.2,
            lambda_bg: 2.0,
            lambda_fg: 0.3,
            temperature: 1.0,
            mask_mode: MaskMode::Paper,
        }
    }
}

impl LossConfig {
    /// The paper's weights with a classification temperature.
    pub fn with_temperature(temperature: f64) -> Self {
        Self {
            temperature,
            ..Self::default()
        }
    }

    pub fn validate(&self) -> Result<()> {
        let w = [
            self.lambda_seg,
            self.lambda_cls,
            self.lambda_bg,
            self.lambda_fg,
        ];
        if w.iter().any(|x| !x.is_finite()) {
            return Err(RelevanceError::Invalid(format!(
                "loss weights must be finite: {self:?}"
            )));
        }
        if !(self.temperature.is_finite() && self.temperature > 0.0) {
            return Err(RelevanceError::Invalid(format!(
                "temperature must be positive, got {}",
                self.temperature
            )));
        }
        Ok(())
    }
}

/// Loss values of one batch.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct Losses {
    pub total: f32,
    pub segmentation: f32,
    pub background: f32,
    pub foreground: f32,
    pub classification: f32,
}

/// The loss terms as scalar tensors, live in the graph.
#[derive(Debug, Clone)]
pub struct LossTensors {
    pub total: Tensor,
    pub segmentation: Tensor,
    pub background: Tensor,
    pub foreground: Tensor,
    pub classification: Tensor,
}

impl LossTensors {
    pub fn values(&self) -> Result<Losses> {
        let v = |t: &Tensor| -> Result<f32> { Ok(t.to_scalar::<f32>()?) };
        Ok(Losses {
            total: v(&self.total)?,
            segmentation: v(&self.segmentation)?,
            background: v(&self.background)?,
            foreground: v(&self.foreground)?,
            classification: v(&self.classification)?,
        })
    }
}

/// Result of [`loss_and_grads`].
#[derive(Debug, Clone)]
pub struct LossAndGrads {
    pub losses: Losses,
    /// d(total loss)/d(parameter) for every parameter, by timm name.
    pub grads: BTreeMap<String, Tensor>,
    /// (B, classes), detached.
    pub logits: Tensor,
    /// The relevance map the loss saw, (B, 1, H, W), detached.
    pub relevance: Tensor,
    /// The model's top-1, the target of the classification term.
    pub predictions: Vec<u32>,
    /// Images whose relevance map was constant (zero map, no segmentation gradient).
    pub degenerate_count: usize,
}

/// Result of [`eval_loss`].
#[derive(Debug, Clone)]
pub struct EvalOutput {
    pub losses: Losses,
    pub logits: Tensor,
    pub relevance: Tensor,
    pub predictions: Vec<u32>,
    pub degenerate_count: usize,
}

/// The background weight map `rev` for the masks.
pub fn reverse_mask(masks: &Tensor, mode: MaskMode) -> Result<Tensor> {
    Ok(match mode {
        MaskMode::Binary => masks.affine(-1.0, 1.0)?,
        MaskMode::Paper => {
            let ones = masks.eq(1f32)?.to_dtype(masks.dtype())?;
            let zeros = masks.eq(0f32)?.to_dtype(masks.dtype())?;
            // s where fractional, 0 where s == 1, 1 where s == 0.
            let keep = (ones + &zeros)?.affine(-1.0, 1.0)?;
            (masks * keep)?.add(&zeros)?
        }
    })
}

fn check_masks(x: &Tensor, masks: &Tensor) -> Result<()> {
    let xd = x.dims();
    let md = masks.dims();
    let ok = xd.len() == 4 && md.len() == 4 && md[0] == xd[0] && md[1] == 1 && md[2..] == xd[2..];
    if ok {
        Ok(())
    } else {
        Err(RelevanceError::MaskShape {
            mask: md.to_vec(),
            image: xd.to_vec(),
        })
    }
}

/// The loss terms from a relevance map (B, 1, H, W), masks of the same shape, the logits and
/// the classification targets (the model's top-1, a constant).
pub fn loss_terms(
    relevance: &Tensor,
    masks: &Tensor,
    logits: &Tensor,
    cls_targets: &[u32],
    cfg: &LossConfig,
) -> Result<LossTensors> {
    cfg.validate()?;
    if relevance.dims() != masks.dims() {
        return Err(RelevanceError::MaskShape {
            mask: masks.dims().to_vec(),
            image: relevance.dims().to_vec(),
        });
    }
    let masks = masks.to_dtype(relevance.dtype())?;
    let rev = reverse_mask(&masks, cfg.mask_mode)?;
    let background = (relevance * rev)?.sqr()?.mean_all()?;
    let foreground = ((relevance * &masks)? - &masks)?.sqr()?.mean_all()?;
    let segmentation =
        (background.affine(cfg.lambda_bg, 0.0)? + foreground.affine(cfg.lambda_fg, 0.0)?)?;
    let scaled = if cfg.temperature == 1.0 {
        logits.clone()
    } else {
        (logits / cfg.temperature)?
    };
    let b = logits.dim(0)?;
    if cls_targets.len() != b {
        return Err(RelevanceError::TargetCount {
            given: cls_targets.len(),
            batch: b,
        });
    }
    let idx = Tensor::from_slice(cls_targets, b, logits.device())?;
    let classification = candle_nn::loss::cross_entropy(&scaled, &idx)?;
    let total = (segmentation.affine(cfg.lambda_seg, 0.0)?
        + classification.affine(cfg.lambda_cls, 0.0)?)?;
    Ok(LossTensors {
        total,
        segmentation,
        background,
        foreground,
        classification,
    })
}

/// A training forward with its relevance map and loss terms.
struct MappedForward {
    forward: TrainForward,
    terms: LossTensors,
    relevance: Tensor,
    predictions: Vec<u32>,
    degenerate_count: usize,
}

/// Forward pass, gradient weights (the forward's first backward pass), relevance map and loss
/// terms. `live` keeps the map in the graph (training); otherwise it is computed from detached
/// attention (validation).
fn forward_with_map(
    vit: &Vit,
    x: &Tensor,
    masks: &Tensor,
    targets: &[u32],
    cfg: &LossConfig,
    live: bool,
) -> Result<MappedForward> {
    cfg.validate()?;
    check_masks(x, masks)?;
    let vc = vit.config();
    let forward = vit.forward_train(x)?;
    let targets = resolve_targets(&forward.logits, Some(targets), vc.num_classes)?;
    let grads = attention_grads(&forward, &targets)?;
    let predictions = resolve_targets(&forward.logits, None, vc.num_classes)?;
    let (m, logits) = if live {
        (
            map_from_attention(vc, &forward.attn, &grads, false)?,
            forward.logits.clone(),
        )
    } else {
        let attn: Vec<Tensor> = forward.attn.iter().map(|a| a.detach()).collect();
        (
            map_from_attention(vc, &attn, &grads, false)?,
            forward.logits.detach(),
        )
    };
    let terms = loss_terms(&m.norm.map, masks, &logits, &predictions, cfg)?;
    Ok(MappedForward {
        relevance: m.norm.map.detach(),
        degenerate_count: m.norm.degenerate.iter().filter(|d| **d).count(),
        forward,
        terms,
        predictions,
    })
}

/// The losses of a batch and the gradient of the total loss for every parameter: a training
/// step's forward and both backward passes, without the optimizer's update. `targets` are the classes whose relevance is optimised (the
/// ground truth in the reference); `masks` are (B, 1, H, W) foreground masks in [0, 1].
///
/// Parameters only reached through the gradient weights (final norm, head, the last block's
/// value path and MLP) get gradient from the classification term only, as in the reference.
pub fn loss_and_grads(
    vit: &Vit,
    x: &Tensor,
    masks: &Tensor,
    targets: &[u32],
    cfg: &LossConfig,
) -> Result<LossAndGrads> {
    let e = forward_with_map(vit, x, masks, targets, cfg, true)?;
    let losses = e.terms.values()?;
    let grads = param_grads(vit, &e.forward, &e.terms.total, cfg)?;
    Ok(LossAndGrads {
        losses,
        grads,
        logits: e.forward.logits.detach(),
        relevance: e.relevance,
        predictions: e.predictions,
        degenerate_count: e.degenerate_count,
    })
}

/// The losses of a batch without parameter gradients (validation). The relevance map still
/// needs the gradient weights, i.e. one backward pass.
pub fn eval_loss(
    vit: &Vit,
    x: &Tensor,
    masks: &Tensor,
    targets: &[u32],
    cfg: &LossConfig,
) -> Result<EvalOutput> {
    let e = forward_with_map(vit, x, masks, targets, cfg, false)?;
    Ok(EvalOutput {
        losses: e.terms.values()?,
        logits: e.forward.logits.detach(),
        relevance: e.relevance,
        predictions: e.predictions,
        degenerate_count: e.degenerate_count,
    })
}

/// The loss with the gradient weights `G_l` and the classification targets supplied from
/// outside and held fixed: the function whose gradient [`loss_and_grads`] returns. Used to check
/// that gradient by finite differences.
pub fn loss_given_grads(
    vit: &Vit,
    x: &Tensor,
    masks: &Tensor,
    attn_grads: &[Tensor],
    cls_targets: &[u32],
    cfg: &LossConfig,
) -> Result<LossTensors> {
    check_masks(x, masks)?;
    let f = vit.forward_train(x)?;
    let m = map_from_attention(vit.config(), &f.attn, attn_grads, false)?;
    loss_terms(&m.norm.map, masks, &f.logits, cls_targets, cfg)
}

/// Back-propagates `loss` (the forward's second backward pass) and collects the gradient of
/// every parameter by name.
///
/// candle prunes the branch behind a zero weight (`affine(0, _)`), so with a zero loss weight
/// some parameters get no gradient at all: theirs is zero. With all weights non-zero every
/// parameter is reached, and a missing gradient means a cut graph, which is an error.
fn param_grads(
    vit: &Vit,
    forward: &TrainForward,
    loss: &Tensor,
    cfg: &LossConfig,
) -> Result<BTreeMap<String, Tensor>> {
    let grads = forward.backward(loss)?;
    let pruned = [cfg.lambda_seg, cfg.lambda_cls, cfg.lambda_bg, cfg.lambda_fg].contains(&0.0);
    vit.params()
        .iter()
        .map(|(name, var)| {
            let g = match grads.get(name) {
                Some(g) => g,
                None if pruned => var.as_tensor().zeros_like()?,
                None => return Err(RelevanceError::MissingGradient(name.clone())),
            };
            Ok((name.clone(), g))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn mask_modes_on_fractional_masks() {
        let s = Tensor::from_slice(&[0.0f32, 1.0, 0.25, 0.5], (1, 1, 2, 2), &Device::Cpu).unwrap();
        let rev = |m| -> Vec<f32> {
            reverse_mask(&s, m)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap()
        };
        assert_eq!(rev(MaskMode::Paper), [1.0, 0.0, 0.25, 0.5]);
        assert_eq!(rev(MaskMode::Binary), [1.0, 0.0, 0.75, 0.5]);

        // Hand-computed losses for r' = [0.5, 0.5, 1, 0], logits favouring class 0.
        let r = Tensor::from_slice(&[0.5f32, 0.5, 1.0, 0.0], (1, 1, 2, 2), &Device::Cpu).unwrap();
        let z = Tensor::from_slice(&[0.0f32, (3f32).ln()], (1, 2), &Device::Cpu).unwrap();
        let l = |mode| {
            let cfg = LossConfig {
                mask_mode: mode,
                ..LossConfig::default()
            };
            loss_terms(&r, &s, &z, &[0], &cfg)
                .unwrap()
                .values()
                .unwrap()
        };
        let p = l(MaskMode::Paper);
        // bg: (0.5·1)², 0, (1·0.25)², 0 → (0.25 + 0.0625) / 4
        assert!((p.background - 0.078125).abs() < 1e-7, "{p:?}");
        // fg: 0, (0.5 − 1)², (0.25 − 0.25)², (0 − 0.5)² → 0.5 / 4
        assert!((p.foreground - 0.125).abs() < 1e-7, "{p:?}");
        assert!((p.segmentation - (2.0 * 0.078125 + 0.3 * 0.125)).abs() < 1e-6);
        // CE of softmax([0, ln 3]) at class 0 = ln 4.
        assert!((p.classification - 4f32.ln()).abs() < 1e-6, "{p:?}");
        assert!((p.total - (0.8 * p.segmentation + 0.2 * p.classification)).abs() < 1e-6);
        let b = l(MaskMode::Binary);
        // bg with 1 − s: (0.5)², 0, (0.75)², 0 → (0.25 + 0.5625) / 4
        assert!((b.background - 0.203125).abs() < 1e-7, "{b:?}");
        assert_eq!(b.foreground, p.foreground);

        // Temperature divides the logits: CE(z / 0.5) = ln(1 + 9).
        let cfg = LossConfig::with_temperature(0.5);
        let t = loss_terms(&r, &s, &z, &[0], &cfg)
            .unwrap()
            .values()
            .unwrap();
        assert!((t.classification - 10f32.ln()).abs() < 1e-6, "{t:?}");
    }

    #[test]
    fn config_round_trips_through_json_with_paper_defaults() {
        let c = LossConfig::default();
        let j = serde_json::to_string(&c).unwrap();
        assert!(j.contains("\"mask_mode\":\"paper\""), "{j}");
        assert_eq!(serde_json::from_str::<LossConfig>(&j).unwrap(), c);
        let partial: LossConfig = serde_json::from_str(r#"{"temperature": 0.65}"#).unwrap();
        assert_eq!(partial, LossConfig::with_temperature(0.65));
        assert!(LossConfig::with_temperature(0.0).validate().is_err());
    }
}
