//! Architecture and preprocessing configuration, kept apart from the weights (as timm does).

use serde::{Deserialize, Serialize};
use std::path::Path;

use crate::{ModelError, Result};

/// Dimensions of a plain ViT/DeiT (class token, learned position embedding, pre-norm blocks).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VitConfig {
    pub img_size: usize,
    pub patch_size: usize,
    pub in_chans: usize,
    pub embed_dim: usize,
    pub depth: usize,
    pub num_heads: usize,
    pub mlp_hidden: usize,
    pub num_classes: usize,
    pub qkv_bias: bool,
    /// timm and the reference use 1e-6 everywhere; HF configs say 1e-12 but the
    /// weights were trained with 1e-6 (robustvit.md §1.5).
    pub layer_norm_eps: f64,
}

impl VitConfig {
    pub fn vit(
        embed_dim: usize,
        depth: usize,
        num_heads: usize,
        img_size: usize,
        patch_size: usize,
    ) -> Self {
        Self {
            img_size,
            patch_size,
            in_chans: 3,
            embed_dim,
            depth,
            num_heads,
            mlp_hidden: 4 * embed_dim,
            num_classes: 1000,
            qkv_bias: true,
            layer_norm_eps: 1e-6,
        }
    }
    pub fn vit_small() -> Self {
        Self::vit(384, 12, 6, 224, 16)
    }
    pub fn vit_base() -> Self {
        Self::vit(768, 12, 12, 224, 16)
    }
    pub fn vit_large() -> Self {
        Self::vit(1024, 24, 16, 224, 16)
    }

    pub fn grid(&self) -> usize {
        self.img_size / self.patch_size
    }
    pub fn num_patches(&self) -> usize {
        self.grid() * self.grid()
    }
    /// Patches plus the class token.
    pub fn num_tokens(&self) -> usize {
        self.num_patches() + 1
    }
    pub fn head_dim(&self) -> usize {
        self.embed_dim / self.num_heads
    }

    /// Refuses what timm's `VisionTransformer` would refuse (or what would only fail later,
    /// inside a loader thread or as a NaN), and sizes far beyond any ViT, so that a corrupt
    /// file cannot make the model allocate without bound.
    pub fn validate(&self) -> Result<()> {
        let bad = |msg: String| Err(ModelError::Config(msg));
        let limits = [
            ("img_size", self.img_size, MAX_IMG_SIZE),
            ("patch_size", self.patch_size, MAX_IMG_SIZE),
            ("embed_dim", self.embed_dim, MAX_WIDTH),
            ("depth", self.depth, MAX_DEPTH),
            ("num_heads", self.num_heads, MAX_WIDTH),
            ("mlp_hidden", self.mlp_hidden, 16 * MAX_WIDTH),
            ("num_classes", self.num_classes, MAX_CLASSES),
        ];
        for (name, v, max) in limits {
            if v == 0 || v > max {
                return bad(format!("{name} {v} is out of range (1..={max})"));
            }
        }
        if self.in_chans != 3 {
            return bad(format!(
                "in_chans {} is not supported: images are read as RGB (3 channels)",
                self.in_chans
            ));
        }
        if !self.img_size.is_multiple_of(self.patch_size) {
            return bad(format!(
                "img_size {} is not a multiple of patch_size {}",
                self.img_size, self.patch_size
            ));
        }
        if !self.embed_dim.is_multiple_of(self.num_heads) {
            return bad(format!(
                "embed_dim {} is not divisible by {} heads (num_heads)",
                self.embed_dim, self.num_heads
            ));
        }
        if self.num_tokens() > MAX_TOKENS {
            return bad(format!(
                "img_size {} with patch_size {} gives {} tokens (at most {MAX_TOKENS})",
                self.img_size,
                self.patch_size,
                self.num_tokens()
            ));
        }
        if !(self.layer_norm_eps.is_finite() && self.layer_norm_eps > 0.0) {
            return bad(format!(
                "layer_norm_eps {} must be a positive number",
                self.layer_norm_eps
            ));
        }
        Ok(())
    }

    /// Dimensions from a timm architecture name such as `vit_base_patch16_224` or
    /// `deit_small_patch16_224` (real hub configs carry no `model_args`).
    pub fn from_timm_architecture(arch: &str) -> Option<Self> {
        let (embed, depth, heads) = if arch.contains("_tiny_") {
            (192, 12, 3)
        } else if arch.contains("_small_") {
            (384, 12, 6)
        } else if arch.contains("_base_") {
            (768, 12, 12)
        } else if arch.contains("_large_") {
            (1024, 24, 16)
        } else if arch.contains("_huge_") {
            (1280, 32, 16)
        } else {
            return None;
        };
        if !(arch.starts_with("vit_") || arch.starts_with("deit_")) || arch.contains("distilled") {
            return None;
        }
        let num_after = |key: &str| -> Option<usize> {
            let i = arch.find(key)? + key.len();
            let digits: String = arch[i..]
                .chars()
                .take_while(|c| c.is_ascii_digit())
                .collect();
            digits.parse().ok()
        };
        let patch = num_after("patch")?;
        let img = arch
            .rsplit('_')
            .next()
            .and_then(|s| s.parse::<usize>().ok())
            .unwrap_or(224);
        Some(Self::vit(embed, depth, heads, img, patch))
    }
}

/// Largest accepted input side: four times the largest ViT input in timm's zoo (518).
pub const MAX_IMG_SIZE: usize = 4096;
/// Largest accepted width (ViT-g/14 is 1536 wide, ViT-e 1792).
pub const MAX_WIDTH: usize = 16384;
pub const MAX_DEPTH: usize = 256;
pub const MAX_CLASSES: usize = 1 << 20;
/// Largest token count (class token included) the attention is allowed to be built for.
pub const MAX_TOKENS: usize = 1 << 14;
/// Interpolation names timm's `pretrained_cfg` may carry.
pub const TIMM_INTERPOLATIONS: [&str; 6] = [
    "nearest", "bilinear", "bicubic", "box", "hamming", "lanczos",
];

/// How images must be prepared for a model (timm's `pretrained_cfg`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PretrainedCfg {
    pub mean: [f32; 3],
    pub std: [f32; 3],
    pub crop_pct: f64,
    /// `bilinear` or `bicubic`.
    pub interpolation: String,
    pub input_size: usize,
}

impl PretrainedCfg {
    /// Inception normalisation, used by the original ViT and AugReg checkpoints.
    pub fn inception(input_size: usize) -> Self {
        Self {
            mean: [0.5; 3],
            std: [0.5; 3],
            crop_pct: 0.9,
            interpolation: "bicubic".into(),
            input_size,
        }
    }
    /// ImageNet mean/std, used by DeiT.
    pub fn imagenet(input_size: usize) -> Self {
        Self {
            mean: [0.485, 0.456, 0.406],
            std: [0.229, 0.224, 0.225],
            crop_pct: 0.875,
            interpolation: "bicubic".into(),
            input_size,
        }
    }
}

impl PretrainedCfg {
    /// What timm's transforms would refuse or turn into NaN: a non-positive std, a crop
    /// fraction outside (0, 1] (timm's zoo goes up to 1.0), an unknown interpolation.
    pub fn validate(&self) -> Result<()> {
        let bad = |msg: String| Err(ModelError::Config(msg));
        if self.mean.iter().any(|m| !m.is_finite()) {
            return bad(format!("mean {:?} must be three finite numbers", self.mean));
        }
        if self.std.iter().any(|s| !(s.is_finite() && *s > 0.0)) {
            return bad(format!("std {:?} must be three positive numbers", self.std));
        }
        if !(self.crop_pct > 0.0 && self.crop_pct <= 1.0) {
            return bad(format!("crop_pct {} must be in (0, 1]", self.crop_pct));
        }
        if !TIMM_INTERPOLATIONS.contains(&self.interpolation.as_str()) {
            return bad(format!(
                "interpolation {:?} is not one of {}",
                self.interpolation,
                TIMM_INTERPOLATIONS.join(", ")
            ));
        }
        if self.input_size == 0 || self.input_size > MAX_IMG_SIZE {
            return bad(format!(
                "input_size {} is out of range (1..={MAX_IMG_SIZE})",
                self.input_size
            ));
        }
        Ok(())
    }
}

/// What a `config.json` next to the weights says: dimensions and preprocessing.
#[derive(Debug, Clone)]
pub struct ParsedConfig {
    pub vit: VitConfig,
    pub pretrained: Option<PretrainedCfg>,
    pub naming: crate::weights::Naming,
}

/// A field that must be three numbers; `None` when absent, an error when present but not that.
fn arr3(obj: &serde_json::Value, key: &str) -> std::result::Result<Option<[f32; 3]>, String> {
    let Some(v) = obj.get(key) else {
        return Ok(None);
    };
    let nums: Option<Vec<f64>> = v
        .as_array()
        .filter(|a| a.len() == 3)
        .and_then(|a| a.iter().map(|x| x.as_f64()).collect());
    match nums {
        Some(n) => Ok(Some([n[0] as f32, n[1] as f32, n[2] as f32])),
        None => Err(format!(
            "`{key}` must be a list of three numbers, found {v}"
        )),
    }
}

/// A size given as an integer or as a list whose last entry is the size (`[3, 224, 224]`).
fn usize_or_pair(obj: &serde_json::Value, key: &str) -> std::result::Result<Option<usize>, String> {
    let Some(v) = obj.get(key) else {
        return Ok(None);
    };
    v.as_u64()
        .or_else(|| v.as_array()?.last()?.as_u64())
        .map(|x| Some(usize::try_from(x).unwrap_or(usize::MAX)))
        .ok_or_else(|| {
            format!("`{key}` must be a non-negative integer (or a list ending in one), found {v}")
        })
}

/// An integer field; `None` when absent, an error when present but not an integer.
fn int(obj: &serde_json::Value, key: &str) -> std::result::Result<Option<usize>, String> {
    match obj.get(key) {
        None => Ok(None),
        Some(v) => v
            .as_u64()
            .map(|x| Some(usize::try_from(x).unwrap_or(usize::MAX)))
            .ok_or_else(|| format!("`{key}` must be a non-negative integer, found {v}")),
    }
}

/// Parses a timm hub `config.json` (`architecture`, optional `model_args`, `pretrained_cfg`)
/// or a Hugging Face transformers `ViTForImageClassification` config.
pub fn parse_config_json(text: &str, path: &Path) -> Result<ParsedConfig> {
    parse_config_value(text).map_err(|msg| ModelError::BadConfigFile {
        path: path.to_path_buf(),
        msg,
    })
}

fn parse_config_value(text: &str) -> std::result::Result<ParsedConfig, String> {
    let v: serde_json::Value =
        serde_json::from_str(text).map_err(|e| format!("not valid JSON: {e}"))?;
    let checked = |cfg: VitConfig| -> std::result::Result<VitConfig, String> {
        cfg.validate().map_err(|e| e.to_string())?;
        Ok(cfg)
    };
    if let Some(arch) = v.get("architecture") {
        let arch = arch.as_str().unwrap_or_default();
        let known = VitConfig::from_timm_architecture(arch);
        let args = v.get("model_args");
        if known.is_none() && args.is_none() {
            return Err(format!(
                "architecture `{arch}` is not a plain ViT/DeiT and no model_args are given"
            ));
        }
        let mut cfg = known.unwrap_or_else(VitConfig::vit_base);
        if let Some(a) = args {
            if let Some(x) = usize_or_pair(a, "img_size")? {
                cfg.img_size = x;
            }
            if let Some(x) = int(a, "patch_size")? {
                cfg.patch_size = x;
            }
            if let Some(x) = int(a, "embed_dim")? {
                cfg.embed_dim = x;
                cfg.mlp_hidden = x.saturating_mul(4);
            }
            if let Some(x) = int(a, "depth")? {
                cfg.depth = x;
            }
            if let Some(x) = int(a, "num_heads")? {
                cfg.num_heads = x;
            }
            if let Some(x) = int(a, "in_chans")? {
                cfg.in_chans = x;
            }
            if let Some(r) = a.get("mlp_ratio") {
                let r = r
                    .as_f64()
                    .filter(|r| r.is_finite() && *r > 0.0)
                    .ok_or_else(|| format!("`mlp_ratio` must be a positive number, found {r}"))?;
                // `as` saturates; the range check in validate() refuses what is too large.
                cfg.mlp_hidden = (cfg.embed_dim as f64 * r) as usize;
            }
            if let Some(b) = a.get("qkv_bias") {
                cfg.qkv_bias = b
                    .as_bool()
                    .ok_or_else(|| format!("`qkv_bias` must be true or false, found {b}"))?;
            }
            if let Some(p) = a.get("global_pool") {
                if p.as_str() != Some("token") {
                    return Err(format!("global_pool {p} is not supported (only `token`)"));
                }
            }
        }
        if let Some(n) = int(&v, "num_classes")? {
            cfg.num_classes = n;
        } else if let Some(n) = args.map(|a| int(a, "num_classes")).transpose()?.flatten() {
            cfg.num_classes = n;
        }
        let cfg = checked(cfg)?;
        let pretrained = match v.get("pretrained_cfg") {
            None => None,
            Some(p) => {
                let crop_pct = match p.get("crop_pct") {
                    None => 0.9,
                    Some(c) => c
                        .as_f64()
                        .ok_or_else(|| format!("`crop_pct` must be a number, found {c}"))?,
                };
                let interpolation = match p.get("interpolation") {
                    None => "bicubic".to_string(),
                    Some(i) => i
                        .as_str()
                        .ok_or_else(|| format!("`interpolation` must be a name, found {i}"))?
                        .to_string(),
                };
                let pc = PretrainedCfg {
                    mean: arr3(p, "mean")?.unwrap_or([0.5; 3]),
                    std: arr3(p, "std")?.unwrap_or([0.5; 3]),
                    crop_pct,
                    interpolation,
                    input_size: usize_or_pair(p, "input_size")?.unwrap_or(cfg.img_size),
                };
                pc.validate().map_err(|e| format!("pretrained_cfg: {e}"))?;
                Some(pc)
            }
        };
        return Ok(ParsedConfig {
            vit: cfg,
            pretrained,
            naming: crate::weights::Naming::Timm,
        });
    }
    if v.get("hidden_size").is_some() {
        let g = |k: &str| int(&v, k)?.ok_or_else(|| format!("missing integer field `{k}`"));
        let embed_dim = g("hidden_size")?;
        let num_classes = v
            .get("id2label")
            .and_then(|x| x.as_object())
            .map(|m| m.len())
            .filter(|&n| n > 0)
            .unwrap_or(1000);
        let cfg = VitConfig {
            img_size: g("image_size")?,
            patch_size: g("patch_size")?,
            in_chans: int(&v, "num_channels")?.unwrap_or(3),
            embed_dim,
            depth: g("num_hidden_layers")?,
            num_heads: g("num_attention_heads")?,
            mlp_hidden: int(&v, "intermediate_size")?.unwrap_or(embed_dim.saturating_mul(4)),
            num_classes,
            qkv_bias: v.get("qkv_bias").and_then(|x| x.as_bool()).unwrap_or(true),
            layer_norm_eps: 1e-6,
        };
        return Ok(ParsedConfig {
            vit: checked(cfg)?,
            pretrained: None,
            naming: crate::weights::Naming::Transformers,
        });
    }
    Err(
        "neither a timm config (`architecture`) nor a transformers ViT config (`hidden_size`)"
            .into(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timm_names_give_paper_dims() {
        let b = VitConfig::from_timm_architecture("vit_base_patch16_224").unwrap();
        assert_eq!(
            (b.embed_dim, b.depth, b.num_heads, b.mlp_hidden),
            (768, 12, 12, 3072)
        );
        assert_eq!(b.num_tokens(), 197);
        let s = VitConfig::from_timm_architecture("deit_small_patch16_224").unwrap();
        assert_eq!((s.embed_dim, s.depth, s.num_heads), (384, 12, 6));
        let l = VitConfig::from_timm_architecture("vit_large_patch16_224").unwrap();
        assert_eq!(
            (l.embed_dim, l.depth, l.num_heads, l.head_dim()),
            (1024, 24, 16, 64)
        );
        assert!(VitConfig::from_timm_architecture("deit_base_distilled_patch16_224").is_none());
        assert!(VitConfig::from_timm_architecture("resnet50").is_none());
    }

    #[test]
    fn hf_config_is_parsed_with_timm_eps() {
        let text = r#"{"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
            "intermediate_size": 256, "image_size": 48, "patch_size": 16, "num_channels": 3,
            "layer_norm_eps": 1e-12, "id2label": {"0": "a", "1": "b", "2": "c"}}"#;
        let p = parse_config_json(text, Path::new("config.json")).unwrap();
        assert_eq!(p.vit.num_classes, 3);
        assert_eq!(p.vit.layer_norm_eps, 1e-6);
        assert_eq!(p.vit.num_tokens(), 10);
        assert_eq!(p.naming, crate::weights::Naming::Transformers);
    }

    #[test]
    fn bad_config_names_the_file() {
        let e = parse_config_json("{\"foo\": 1}", Path::new("/x/config.json")).unwrap_err();
        assert!(e.to_string().contains("/x/config.json"), "{e}");
        let e = VitConfig::vit(30, 2, 4, 32, 8).validate().unwrap_err();
        assert!(e.to_string().contains("not divisible"), "{e}");
    }
}
