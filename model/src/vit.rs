//! A timm-equivalent Vision Transformer (ViT / non-distilled DeiT) that can be trained and
//! that exposes every block's attention map.
//!
//! Two paths share the weights:
//! * [`Mode::Train`]: only ops that record a backward pass in candle (composed softmax and
//!   layer norm, exact erf GELU). candle's fused `softmax_last_dim` / `layer_norm` silently
//!   detach their output, which would train nothing upstream of them.
//! * [`Mode::Infer`]: fused kernels, weights detached so no graph is recorded.

use candle_core::{DType, Device, Tensor, Var, D};
use std::collections::BTreeMap;

use crate::config::VitConfig;
use crate::grads::{AttnProbe, GradSink, GradSlot, TrainForward};
use crate::{ModelError, Result};

/// Which kernels a forward pass may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Train,
    Infer,
}

/// The trainable parameters, by timm name, in a deterministic (sorted) order.
#[derive(Clone, Default)]
pub struct Params {
    vars: BTreeMap<String, Var>,
}

impl Params {
    pub fn get(&self, name: &str) -> Option<&Var> {
        self.vars.get(name)
    }
    pub fn iter(&self) -> impl Iterator<Item = (&String, &Var)> {
        self.vars.iter()
    }
    pub fn names(&self) -> impl Iterator<Item = &String> {
        self.vars.keys()
    }
    pub fn len(&self) -> usize {
        self.vars.len()
    }
    pub fn is_empty(&self) -> bool {
        self.vars.is_empty()
    }
    /// Total number of scalar parameters.
    pub fn count(&self) -> usize {
        self.vars.values().map(|v| v.elem_count()).sum()
    }
    /// Detached snapshots of every parameter (safe to keep while training goes on).
    pub fn snapshot(&self) -> Result<BTreeMap<String, Tensor>> {
        self.vars
            .iter()
            .map(|(k, v)| Ok((k.clone(), v.as_tensor().copy()?.detach())))
            .collect()
    }
    /// Overwrites every parameter in place from `tensors` (same names and shapes required).
    pub fn assign(&self, tensors: &BTreeMap<String, Tensor>) -> Result<()> {
        for (name, var) in &self.vars {
            let t = tensors.get(name).ok_or_else(|| ModelError::MissingTensor {
                name: name.clone(),
                origin: "the tensors to assign".into(),
            })?;
            if t.dims() != var.dims() {
                return Err(ModelError::ShapeMismatch {
                    name: name.clone(),
                    expected: var.dims().to_vec(),
                    found: t.dims().to_vec(),
                    origin: "the tensors to assign".into(),
                });
            }
            var.set(&t.to_dtype(var.dtype())?.to_device(var.device())?)?;
        }
        Ok(())
    }
}

/// Every tensor of a model with this config, in timm naming, with its shape. This is the
/// asserted weight mapping: loading fails unless a checkpoint holds exactly these.
pub fn expected_shapes(cfg: &VitConfig) -> Vec<(String, Vec<usize>)> {
    let d = cfg.embed_dim;
    let p = cfg.patch_size;
    let mut v = vec![
        ("cls_token".to_string(), vec![1, 1, d]),
        ("pos_embed".to_string(), vec![1, cfg.num_tokens(), d]),
        (
            "patch_embed.proj.weight".to_string(),
            vec![d, cfg.in_chans, p, p],
        ),
        ("patch_embed.proj.bias".to_string(), vec![d]),
    ];
    for i in 0..cfg.depth {
        let b = |s: &str| format!("blocks.{i}.{s}");
        v.push((b("norm1.weight"), vec![d]));
        v.push((b("norm1.bias"), vec![d]));
        v.push((b("attn.qkv.weight"), vec![3 * d, d]));
        if cfg.qkv_bias {
            v.push((b("attn.qkv.bias"), vec![3 * d]));
        }
        v.push((b("attn.proj.weight"), vec![d, d]));
        v.push((b("attn.proj.bias"), vec![d]));
        v.push((b("norm2.weight"), vec![d]));
        v.push((b("norm2.bias"), vec![d]));
        v.push((b("mlp.fc1.weight"), vec![cfg.mlp_hidden, d]));
        v.push((b("mlp.fc1.bias"), vec![cfg.mlp_hidden]));
        v.push((b("mlp.fc2.weight"), vec![d, cfg.mlp_hidden]));
        v.push((b("mlp.fc2.bias"), vec![d]));
    }
    v.push(("norm.weight".to_string(), vec![d]));
    v.push(("norm.bias".to_string(), vec![d]));
    v.push(("head.weight".to_string(), vec![cfg.num_classes, d]));
    v.push(("head.bias".to_string(), vec![cfg.num_classes]));
    v
}

/// A linear layer's weights, for the per-layer path (inference, and training on devices
/// without the fused block).
#[derive(Clone)]
struct LinearLayer {
    w: Tensor,
    b: Option<Tensor>,
}

impl LinearLayer {
    /// y = x W^T + b over the last dimension (one GEMM, whatever the rank of x). In training,
    /// `sink` is the training forward's (it says whether a backward pass wants the weight
    /// gradients).
    fn forward(&self, x: &Tensor, mode: Mode, sink: Option<&GradSink>) -> Result<Tensor> {
        self.forward_residual(x, None, mode, sink)
    }

    /// `residual + x W^T + b`: at inference the GEMM accumulates onto the residual directly.
    fn forward_residual(
        &self,
        x: &Tensor,
        residual: Option<&Tensor>,
        mode: Mode,
        sink: Option<&GradSink>,
    ) -> Result<Tensor> {
        let y = match (mode, &self.b) {
            (Mode::Infer, b) => {
                return Ok(crate::ops::linear_value(x, &self.w, b.as_ref(), residual)?)
            }
            (Mode::Train, Some(b)) => crate::ops::layers::linear_in(x, &self.w, b, sink)?,
            (Mode::Train, None) => {
                let k = x.dim(D::Minus1)?;
                let mut out = x.dims().to_vec();
                *out.last_mut().expect("rank >= 1") = self.w.dim(0)?;
                x.reshape(((), k))?.matmul(&self.w.t()?)?.reshape(out)?
            }
        };
        Ok(match residual {
            Some(r) => (r + y)?,
            None => y,
        })
    }
}

/// A LayerNorm's weights, for the per-layer path.
#[derive(Clone)]
struct NormLayer {
    w: Tensor,
    b: Tensor,
    eps: f32,
}

impl NormLayer {
    fn forward(&self, x: &Tensor, mode: Mode) -> Result<Tensor> {
        Ok(match mode {
            Mode::Train => crate::ops::layer_norm(x, &self.w, &self.b, self.eps)?,
            Mode::Infer => crate::ops::layer_norm_value(x, &self.w, &self.b, self.eps)?,
        })
    }
}

#[derive(Clone)]
struct Block {
    norm1: NormLayer,
    qkv: LinearLayer,
    proj: LinearLayer,
    norm2: NormLayer,
    fc1: LinearLayer,
    fc2: LinearLayer,
    /// The same weights for the fused training block (CPU).
    fused: crate::block::BlockRef,
}

/// q (already scaled), k and v as contiguous (B, H, N, hd) tensors, for devices without the
/// fused attention kernels (every matmul operand contiguous, as cuBLAS requires).
fn split_heads(qkv: &Tensor, h: usize, scale: f64) -> Result<(Tensor, Tensor, Tensor)> {
    let (b, n, d3) = qkv.dims3()?;
    let parts = qkv
        .reshape((b, n, 3, h, d3 / 3 / h))?
        .permute((2, 0, 3, 1, 4))?;
    Ok((
        (parts.get(0)? * scale)?.contiguous()?,
        parts.get(1)?.contiguous()?,
        parts.get(2)?.contiguous()?,
    ))
}

/// The model. Cloning is cheap and shares the parameters.
#[derive(Clone)]
pub struct Vit {
    cfg: VitConfig,
    params: Params,
    cls_token: Tensor,
    pos_embed: Tensor,
    patch: LinearLayer,
    blocks: Vec<Block>,
    norm: NormLayer,
    head: LinearLayer,
}

impl Vit {
    /// Builds the model from tensors in timm naming. Strict: every expected tensor must be
    /// present with its exact shape and nothing else may be there. `source` names the origin
    /// of the tensors in error messages.
    pub fn from_tensors(
        cfg: &VitConfig,
        mut tensors: BTreeMap<String, Tensor>,
        device: &Device,
        source: &str,
    ) -> Result<Self> {
        cfg.validate()?;
        let mut vars = BTreeMap::new();
        for (name, shape) in expected_shapes(cfg) {
            let t = tensors
                .remove(&name)
                .ok_or_else(|| ModelError::MissingTensor {
                    name: name.clone(),
                    origin: source.to_string(),
                })?;
            if t.dims() != shape.as_slice() {
                return Err(ModelError::ShapeMismatch {
                    name,
                    expected: shape,
                    found: t.dims().to_vec(),
                    origin: source.to_string(),
                });
            }
            let t = t.to_dtype(DType::F32)?.to_device(device)?;
            vars.insert(name, Var::from_tensor(&t)?);
        }
        if let Some(name) = tensors.keys().next() {
            return Err(ModelError::UnexpectedTensor {
                name: name.clone(),
                count: tensors.len(),
                origin: source.to_string(),
            });
        }
        Self::from_params(cfg.clone(), Params { vars })
    }

    fn from_params(cfg: VitConfig, params: Params) -> Result<Self> {
        let t = |n: &str| -> Tensor { params.vars[n].as_tensor().clone() };
        let eps = cfg.layer_norm_eps as f32;
        let d = cfg.embed_dim;
        let patch_w = t("patch_embed.proj.weight")
            .reshape((d, cfg.in_chans * cfg.patch_size * cfg.patch_size))?;
        let blocks = (0..cfg.depth)
            .map(|i| {
                let n = |s: &str| format!("blocks.{i}.{s}");
                let lin_ref = |s: &str, bias: bool| crate::block::LinearRef {
                    w: t(&n(&format!("{s}.weight"))),
                    b: bias.then(|| t(&n(&format!("{s}.bias")))),
                    w_name: n(&format!("{s}.weight")),
                    b_name: n(&format!("{s}.bias")),
                };
                let norm_ref = |s: &str| crate::block::NormRef {
                    w: t(&n(&format!("{s}.weight"))),
                    b: t(&n(&format!("{s}.bias"))),
                    eps,
                    w_name: n(&format!("{s}.weight")),
                    b_name: n(&format!("{s}.bias")),
                };
                let fused = crate::block::BlockRef {
                    norm1: norm_ref("norm1"),
                    qkv: lin_ref("attn.qkv", cfg.qkv_bias),
                    proj: lin_ref("attn.proj", true),
                    norm2: norm_ref("norm2"),
                    fc1: lin_ref("mlp.fc1", true),
                    fc2: lin_ref("mlp.fc2", true),
                    heads: cfg.num_heads,
                    scale: ((d / cfg.num_heads) as f64).powf(-0.5) as f32,
                };
                // The per-layer path shares the fused block's tensors.
                let lin = |r: &crate::block::LinearRef| LinearLayer {
                    w: r.w.clone(),
                    b: r.b.clone(),
                };
                let ln = |r: &crate::block::NormRef| NormLayer {
                    w: r.w.clone(),
                    b: r.b.clone(),
                    eps: r.eps,
                };
                Block {
                    norm1: ln(&fused.norm1),
                    qkv: lin(&fused.qkv),
                    proj: lin(&fused.proj),
                    norm2: ln(&fused.norm2),
                    fc1: lin(&fused.fc1),
                    fc2: lin(&fused.fc2),
                    fused,
                }
            })
            .collect();
        Ok(Self {
            cls_token: t("cls_token"),
            pos_embed: t("pos_embed"),
            patch: LinearLayer {
                w: patch_w,
                b: Some(t("patch_embed.proj.bias")),
            },
            blocks,
            norm: NormLayer {
                w: t("norm.weight"),
                b: t("norm.bias"),
                eps,
            },
            head: LinearLayer {
                w: t("head.weight"),
                b: Some(t("head.bias")),
            },
            cfg,
            params,
        })
    }

    /// A randomly initialised model (timm's scheme: truncated normal std 0.02 for linear
    /// weights and the position embedding, zero biases, unit LayerNorm gains, PyTorch's default
    /// for the patch convolution), reproducible
    /// from `seed` on every device.
    pub fn random(cfg: &VitConfig, seed: u64, device: &Device) -> Result<Self> {
        use rand::{Rng, SeedableRng};
        cfg.validate()?;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let mut tensors = BTreeMap::new();
        for (name, shape) in expected_shapes(cfg) {
            let n: usize = shape.iter().product();
            let data: Vec<f32> = if name.starts_with("patch_embed.") {
                // timm leaves the patch convolution at PyTorch's default init:
                // U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weight and bias.
                let fan_in = (cfg.in_chans * cfg.patch_size * cfg.patch_size) as f32;
                let bound = 1.0 / fan_in.sqrt();
                (0..n)
                    .map(|_| (rng.random::<f32>() * 2.0 - 1.0) * bound)
                    .collect()
            } else if name.ends_with(".bias") {
                vec![0.0; n]
            } else if name.contains("norm") {
                vec![1.0; n]
            } else {
                let std = if name == "cls_token" { 1e-6 } else { 0.02 };
                (0..n)
                    .map(|_| loop {
                        // Box-Muller, truncated like timm's `trunc_normal_(std=.02)`: at ±2
                        // in value, not in standard deviations, so at std 0.02 it is a plain
                        // normal (a 2σ cut would shrink the spread by 12 %).
                        let u1: f32 = rng.random::<f32>().max(1e-12);
                        let u2: f32 = rng.random();
                        let z = (-2.0 * u1.ln()).sqrt() * (std::f32::consts::TAU * u2).cos();
                        if (z * std).abs() <= 2.0 {
                            break z * std;
                        }
                    })
                    .collect()
            };
            tensors.insert(name, Tensor::from_vec(data, shape, device)?);
        }
        Self::from_tensors(cfg, tensors, device, "random init")
    }

    pub fn config(&self) -> &VitConfig {
        &self.cfg
    }

    /// An inference copy with every weight in `dtype` (bf16 or f16 for GPUs). [`Vit::forward`]
    /// then converts its input to that dtype and runs on candle's ops for it (the fused f32
    /// kernels are CPU-only); training always uses the f32 model. On the CPU candle widens bf16
    /// matrix products to f32, so a bf16 copy is slower there, not faster.
    pub fn to_dtype(&self, dtype: DType) -> Result<Self> {
        let vars = self
            .params
            .vars
            .iter()
            .map(|(k, v)| {
                Ok((
                    k.clone(),
                    Var::from_tensor(&v.as_tensor().to_dtype(dtype)?)?,
                ))
            })
            .collect::<Result<BTreeMap<_, _>>>()?;
        Self::from_params(self.cfg.clone(), Params { vars })
    }

    /// The dtype of the weights (f32 unless made by [`Vit::to_dtype`]).
    pub fn dtype(&self) -> DType {
        self.cls_token.dtype()
    }
    pub fn params(&self) -> &Params {
        &self.params
    }
    pub fn device(&self) -> &Device {
        self.cls_token.device()
    }

    fn check_input(&self, x: &Tensor) -> Result<(usize, usize)> {
        let (b, c, h, w) = x.dims4().map_err(|_| ModelError::InputShape {
            expected: format!(
                "(B, {}, {}, {})",
                self.cfg.in_chans, self.cfg.img_size, self.cfg.img_size
            ),
            found: x.dims().to_vec(),
        })?;
        if c != self.cfg.in_chans || h != self.cfg.img_size || w != self.cfg.img_size {
            return Err(ModelError::InputShape {
                expected: format!(
                    "(B, {}, {}, {})",
                    self.cfg.in_chans, self.cfg.img_size, self.cfg.img_size
                ),
                found: x.dims().to_vec(),
            });
        }
        Ok((b, c))
    }

    /// Patch embedding as patchify + GEMM: the same maths as timm's stride-p convolution
    /// without computing a gradient for the image.
    fn embed(&self, x: &Tensor, mode: Mode, sink: Option<&GradSink>) -> Result<Tensor> {
        let (b, c) = self.check_input(x)?;
        let p = self.cfg.patch_size;
        let g = self.cfg.grid();
        let patches = x
            .reshape((b, c, g, p, g, p))?
            .permute((0, 2, 4, 1, 3, 5))?
            .contiguous()?
            .reshape((b, g * g, c * p * p))?;
        let tokens = self.patch.forward(&patches, mode, sink)?;
        let (cls, pos) = match mode {
            Mode::Train => (self.cls_token.clone(), self.pos_embed.clone()),
            Mode::Infer => (self.cls_token.detach(), self.pos_embed.detach()),
        };
        let cls = cls.broadcast_as((b, 1, self.cfg.embed_dim))?;
        Ok(Tensor::cat(&[&cls, &tokens], 1)?.broadcast_add(&pos)?)
    }

    /// One training block (per-layer ops, the path devices without the fused block take): its
    /// output, its attention map and (with `probe`) where dL/dA will be found.
    fn block(
        &self,
        blk: &Block,
        x: &Tensor,
        probe: bool,
        sink: Option<&GradSink>,
    ) -> Result<(Tensor, Tensor, Option<AttnProbe>)> {
        let mode = Mode::Train;
        let (b, n, d) = x.dims3()?;
        let h = self.cfg.num_heads;
        let hd = d / h;
        let scale = (hd as f64).powf(-0.5);
        let y = blk.norm1.forward(x, mode)?;
        let qkv = blk.qkv.forward(&y, mode, sink)?;
        let fused = crate::ops::fused_attention_available(&qkv);
        let mut attn = if fused {
            crate::ops::attention_probs(&qkv, h, scale)?
        } else {
            let (q, k, _) = split_heads(&qkv, h, scale)?;
            crate::ops::softmax(&q.matmul(&k.t()?)?)?
        };
        let mut slot = None;
        let mut var = None;
        if probe && fused {
            slot = Some(GradSlot::default());
        } else if probe {
            let z = Var::zeros(attn.shape(), DType::F32, x.device())?;
            attn = attn.add(z.as_tensor())?;
            var = Some(z);
        }
        let o = if fused {
            crate::ops::attention_apply(&attn, &qkv, h, slot.as_ref())?
        } else {
            let (_, _, v) = split_heads(&qkv, h, scale)?;
            attn.matmul(&v)?
                .transpose(1, 2)?
                .contiguous()?
                .reshape((b, n, d))?
        };
        let x = blk.proj.forward_residual(&o, Some(x), mode, sink)?;
        let y = blk.norm2.forward(&x, mode)?;
        let y = blk.fc1.forward(&y, mode, sink)?;
        let y = crate::ops::gelu_erf(&y)?;
        let x = blk.fc2.forward_residual(&y, Some(&x), mode, sink)?;
        let probe = slot.map(AttnProbe::Slot).or(var.map(AttnProbe::Var));
        Ok((x, attn, probe))
    }

    /// One block at inference for the first `queries` tokens of its output: every token feeds
    /// the attention's keys and values, but only the first `queries` rows go on through the
    /// projection and the MLP. No attention map is kept.
    fn block_infer(&self, blk: &Block, x: &Tensor, queries: usize) -> Result<Tensor> {
        let (_, n, d) = x.dims3()?;
        let h = self.cfg.num_heads;
        let scale = ((d / h) as f64).powf(-0.5);
        let y = blk.norm1.forward(x, Mode::Infer)?;
        let qkv = blk.qkv.forward(&y, Mode::Infer, None)?;
        let o = crate::ops::attention_value(&qkv, h, scale, queries)?;
        let x = if queries == n {
            x.clone()
        } else {
            x.narrow(1, 0, queries)?.contiguous()?
        };
        let x = blk.proj.forward_residual(&o, Some(&x), Mode::Infer, None)?;
        let y = blk.norm2.forward(&x, Mode::Infer)?;
        let y = blk.fc1.forward(&y, Mode::Infer, None)?;
        let y = crate::ops::gelu_erf_value(&y)?;
        blk.fc2.forward_residual(&y, Some(&x), Mode::Infer, None)
    }

    /// Token features after the final LayerNorm, (B, N, D) (timm's `forward_features`).
    pub fn forward_features(&self, x: &Tensor, mode: Mode) -> Result<Tensor> {
        let mut h = self.embed(x, mode, None)?;
        let n = h.dim(1)?;
        for blk in &self.blocks {
            h = match mode {
                Mode::Infer => self.block_infer(blk, &h, n)?,
                Mode::Train => self.block(blk, &h, false, None)?.0,
            };
        }
        self.norm.forward(&h, mode)
    }

    /// Class logits from token features: the head on the class token (timm's `forward_head`).
    pub fn forward_head(&self, features: &Tensor, mode: Mode) -> Result<Tensor> {
        self.head_of(features, mode, None)
    }

    fn head_of(&self, features: &Tensor, mode: Mode, sink: Option<&GradSink>) -> Result<Tensor> {
        let cls = features.narrow(1, 0, 1)?.squeeze(1)?;
        self.head.forward(&cls, mode, sink)
    }

    /// Inference: logits only, fused kernels, no graph recorded.
    ///
    /// The head reads the class token alone, so the last block computes its attention output
    /// and MLP for that token only (the same logits as `forward_head(forward_features(x))`,
    /// about 1/12 fewer operations; tested in `model/tests/golden.rs`).
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let x = x.to_dtype(self.dtype())?;
        let mut h = self.embed(&x, Mode::Infer, None)?;
        let n = h.dim(1)?;
        let last = self.blocks.len().saturating_sub(1);
        for (i, blk) in self.blocks.iter().enumerate() {
            h = self.block_infer(blk, &h, if i == last { 1 } else { n })?;
        }
        let f = self.norm.forward(&h, Mode::Infer)?;
        self.forward_head(&f, Mode::Infer)
    }

    /// Training forward: logits and every block's attention map, differentiable end to end.
    pub fn forward_train(&self, x: &Tensor) -> Result<TrainForward> {
        let sink = GradSink::default();
        let mut h = self.embed(x, Mode::Train, Some(&sink))?;
        let mut attn = Vec::with_capacity(self.blocks.len());
        let mut probes = Vec::with_capacity(self.blocks.len());
        let last = self.blocks.len().saturating_sub(1);
        for (i, blk) in self.blocks.iter().enumerate() {
            if crate::block::available(&h, &blk.fused) {
                let slot = GradSlot::default();
                // The head reads the class token alone: the last block's attention output and
                // MLP run for that token only, forward and backward (its attention map is
                // still computed in full). Same logits and gradients as all tokens.
                let queries = if i == last { 1 } else { h.dim(1)? };
                let (next, a) = crate::block::forward(&blk.fused, &h, queries, Some(&slot), &sink)?;
                h = next;
                attn.push(a);
                probes.push(AttnProbe::Slot(slot));
                continue;
            }
            let (next, a, probe) = self.block(blk, &h, true, Some(&sink))?;
            h = next;
            attn.push(a);
            probes.push(probe.expect("a probe was asked for"));
        }
        let f = self.norm.forward(&h, Mode::Train)?;
        let logits = self.head_of(&f, Mode::Train, Some(&sink))?;
        Ok(TrainForward {
            logits,
            attn,
            probes,
            sink,
            params: self.params.clone(),
        })
    }
}
