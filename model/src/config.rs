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

    pub fn validate(&self) -> Result<()> {
        let bad = |msg: String| Err(ModelError::Config(msg));
        if self.patch_size == 0 || !self.img_size.is_multiple_of(self.patch_size) {
            return bad(format!(
                "image size {} is not a multiple of patch size {}",
                self.img_size, self.patch_size
            ));
        }
        if self.num_heads == 0 || !self.embed_dim.is_multiple_of(self.num_heads) {
            return bad(format!(
                "embed dim {} is not divisible by {} heads",
                self.embed_dim, self.num_heads
            ));
        }
        if self.depth == 0 || self.num_classes == 0 || self.mlp_hidden == 0 {
            return bad("depth, num_classes and mlp_hidden must be positive".into());
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

/// What a `config.json` next to the weights says: dimensions and preprocessing.
#[derive(Debug, Clone)]
pub struct ParsedConfig {
    pub vit: VitConfig,
    pub pretrained: Option<PretrainedCfg>,
    pub naming: crate::weights::Naming,
}

fn arr3(v: &serde_json::Value) -> Option<[f32; 3]> {
    let a = v.as_array()?;
    if a.len() != 3 {
        return None;
    }
    Some([
        a[0].as_f64()? as f32,
        a[1].as_f64()? as f32,
        a[2].as_f64()? as f32,
    ])
}

fn usize_or_pair(v: &serde_json::Value) -> Option<usize> {
    v.as_u64()
        .map(|x| x as usize)
        .or_else(|| v.as_array()?.last()?.as_u64().map(|x| x as usize))
}

/// Parses a timm hub `config.json` (`architecture`, optional `model_args`, `pretrained_cfg`)
/// or a Hugging Face transformers `ViTForImageClassification` config.
pub fn parse_config_json(text: &str, path: &Path) -> Result<ParsedConfig> {
    let err = |msg: String| ModelError::BadConfigFile {
        path: path.to_path_buf(),
        msg,
    };
    let v: serde_json::Value =
        serde_json::from_str(text).map_err(|e| err(format!("not valid JSON: {e}")))?;
    if v.get("architecture").is_some() {
        let arch = v["architecture"].as_str().unwrap_or_default();
        let mut cfg = VitConfig::from_timm_architecture(arch).unwrap_or_else(VitConfig::vit_base);
        let known = VitConfig::from_timm_architecture(arch).is_some();
        let args = v.get("model_args");
        if !known && args.is_none() {
            return Err(err(format!(
                "architecture `{arch}` is not a plain ViT/DeiT and no model_args are given"
            )));
        }
        if let Some(a) = args {
            if let Some(x) = a.get("img_size").and_then(usize_or_pair) {
                cfg.img_size = x;
            }
            let get = |k: &str| a.get(k).and_then(|x| x.as_u64()).map(|x| x as usize);
            if let Some(x) = get("patch_size") {
                cfg.patch_size = x;
            }
            if let Some(x) = get("embed_dim") {
                cfg.embed_dim = x;
                cfg.mlp_hidden = 4 * x;
            }
            if let Some(x) = get("depth") {
                cfg.depth = x;
            }
            if let Some(x) = get("num_heads") {
                cfg.num_heads = x;
            }
            if let Some(x) = get("in_chans") {
                cfg.in_chans = x;
            }
            if let Some(r) = a.get("mlp_ratio").and_then(|x| x.as_f64()) {
                cfg.mlp_hidden = (cfg.embed_dim as f64 * r) as usize;
            }
            if let Some(b) = a.get("qkv_bias").and_then(|x| x.as_bool()) {
                cfg.qkv_bias = b;
            }
            if let Some(p) = a.get("global_pool").and_then(|x| x.as_str()) {
                if p != "token" {
                    return Err(err(format!(
                        "global_pool `{p}` is not supported (only `token`)"
                    )));
                }
            }
        }
        if let Some(n) = v
            .get("num_classes")
            .and_then(|x| x.as_u64())
            .or_else(|| args.and_then(|a| a.get("num_classes")?.as_u64()))
        {
            cfg.num_classes = n as usize;
        }
        let pretrained = v.get("pretrained_cfg").map(|p| {
            let input_size = p
                .get("input_size")
                .and_then(usize_or_pair)
                .unwrap_or(cfg.img_size);
            PretrainedCfg {
                mean: p.get("mean").and_then(arr3).unwrap_or([0.5; 3]),
                std: p.get("std").and_then(arr3).unwrap_or([0.5; 3]),
                crop_pct: p.get("crop_pct").and_then(|x| x.as_f64()).unwrap_or(0.9),
                interpolation: p
                    .get("interpolation")
                    .and_then(|x| x.as_str())
                    .unwrap_or("bicubic")
                    .to_string(),
                input_size,
            }
        });
        cfg.validate()?;
        return Ok(ParsedConfig {
            vit: cfg,
            pretrained,
            naming: crate::weights::Naming::Timm,
        });
    }
    if v.get("hidden_size").is_some() {
        let g = |k: &str| {
            v.get(k)
                .and_then(|x| x.as_u64())
                .map(|x| x as usize)
                .ok_or_else(|| err(format!("missing integer field `{k}`")))
        };
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
            in_chans: g("num_channels").unwrap_or(3),
            embed_dim,
            depth: g("num_hidden_layers")?,
            num_heads: g("num_attention_heads")?,
            mlp_hidden: g("intermediate_size").unwrap_or(4 * embed_dim),
            num_classes,
            qkv_bias: v.get("qkv_bias").and_then(|x| x.as_bool()).unwrap_or(true),
            layer_norm_eps: 1e-6,
        };
        cfg.validate()?;
        return Ok(ParsedConfig {
            vit: cfg,
            pretrained: None,
            naming: crate::weights::Naming::Transformers,
        });
    }
    Err(err(
        "neither a timm config (`architecture`) nor a transformers ViT config (`hidden_size`)"
            .into(),
    ))
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
