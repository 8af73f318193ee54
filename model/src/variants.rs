//! The seven models of the paper and where their pretrained weights live on the hub
//! (robustvit.md §1.4).

use crate::config::{PretrainedCfg, VitConfig};
use crate::weights::Naming;
use crate::ModelError;

/// One named model: architecture, checkpoint location and native preprocessing.
#[derive(Debug, Clone, Copy)]
pub struct Variant {
    /// Canonical name used on the command line and in result tables.
    pub name: &'static str,
    pub aliases: &'static [&'static str],
    /// The name the paper's tables use.
    pub paper_name: &'static str,
    pub hub_repo: &'static str,
    pub revision: Option<&'static str>,
    pub naming: Naming,
    size: Size,
    deit: bool,
}

#[derive(Debug, Clone, Copy)]
enum Size {
    Small,
    Base,
    Large,
}

impl Variant {
    pub fn config(&self) -> VitConfig {
        match self.size {
            Size::Small => VitConfig::vit_small(),
            Size::Base => VitConfig::vit_base(),
            Size::Large => VitConfig::vit_large(),
        }
    }
    /// The checkpoint's own preprocessing (used by the `official` evaluation protocol when
    /// neither a `config.json` nor the weights' metadata says otherwise). Every one of the seven
    /// uses timm's crop_pct 0.9 and bicubic resizing (Resize 248 for 224 px), as their hub
    /// configs and timm's results tables state; DeiT differs only in the ImageNet mean/std.
    /// (0.875 is timm's ImageNet default for other families, not these weights'.)
    pub fn native_pretrained_cfg(&self) -> PretrainedCfg {
        if self.deit {
            PretrainedCfg {
                crop_pct: 0.9,
                ..PretrainedCfg::imagenet(224)
            }
        } else {
            PretrainedCfg::inception(224)
        }
    }
    /// `org/name` or `org/name@revision`, as accepted by `--weights`.
    pub fn hub_spec(&self) -> String {
        match self.revision {
            Some(r) => format!("{}@{}", self.hub_repo, r),
            None => self.hub_repo.to_string(),
        }
    }
}

pub const VARIANTS: [Variant; 7] = [
    Variant {
        name: "vit-base",
        aliases: &["vit-b"],
        paper_name: "ViT-B",
        hub_repo: "timm/vit_base_patch16_224.orig_in21k_ft_in1k",
        revision: None,
        naming: Naming::Timm,
        size: Size::Base,
        deit: false,
    },
    Variant {
        name: "vit-large",
        aliases: &["vit-l"],
        paper_name: "ViT-L",
        hub_repo: "google/vit-large-patch16-224",
        // The only revision of this repository that holds safetensors.
        revision: Some("refs/pr/2"),
        naming: Naming::Transformers,
        size: Size::Large,
        deit: false,
    },
    Variant {
        name: "augreg-small",
        aliases: &["ar-s"],
        paper_name: "AR-S",
        hub_repo: "timm/vit_small_patch16_224.augreg_in21k_ft_in1k",
        revision: None,
        naming: Naming::Timm,
        size: Size::Small,
        deit: false,
    },
    Variant {
        name: "augreg-base",
        aliases: &["ar-b"],
        paper_name: "AR-B",
        // Not the default `augreg2` tag, a later re-finetune.
        hub_repo: "timm/vit_base_patch16_224.augreg_in21k_ft_in1k",
        revision: None,
        naming: Naming::Timm,
        size: Size::Base,
        deit: false,
    },
    Variant {
        name: "augreg-large",
        aliases: &["ar-l"],
        paper_name: "AR-L",
        hub_repo: "timm/vit_large_patch16_224.augreg_in21k_ft_in1k",
        revision: None,
        naming: Naming::Timm,
        size: Size::Large,
        deit: false,
    },
    Variant {
        name: "deit-small",
        aliases: &["deit-s"],
        paper_name: "DeiT-S",
        hub_repo: "timm/deit_small_patch16_224.fb_in1k",
        revision: None,
        naming: Naming::Timm,
        size: Size::Small,
        deit: true,
    },
    Variant {
        name: "deit-base",
        aliases: &["deit-b"],
        paper_name: "DeiT-B",
        hub_repo: "timm/deit_base_patch16_224.fb_in1k",
        revision: None,
        naming: Naming::Timm,
        size: Size::Base,
        deit: true,
    },
];

/// Looks a model up by name or alias (case-insensitive).
pub fn variant(name: &str) -> Result<&'static Variant, ModelError> {
    let n = name.to_ascii_lowercase();
    VARIANTS
        .iter()
        .find(|v| v.name == n || v.aliases.contains(&n.as_str()))
        .ok_or_else(|| ModelError::UnknownModel {
            name: name.to_string(),
            known: VARIANTS
                .iter()
                .map(|v| format!("{} ({})", v.name, v.aliases.join(", ")))
                .collect::<Vec<_>>()
                .join(", "),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_and_alias_resolves() {
        for v in &VARIANTS {
            assert_eq!(variant(v.name).unwrap().name, v.name);
            for a in v.aliases {
                assert_eq!(variant(a).unwrap().name, v.name);
            }
        }
        assert_eq!(
            variant("AR-B").unwrap().hub_repo,
            "timm/vit_base_patch16_224.augreg_in21k_ft_in1k"
        );
        assert_eq!(
            variant("vit-l").unwrap().hub_spec(),
            "google/vit-large-patch16-224@refs/pr/2"
        );
        let e = variant("resnet").unwrap_err().to_string();
        assert!(e.contains("augreg-base (ar-b)"), "{e}");
    }

    #[test]
    fn dims_and_normalisation_follow_the_reference() {
        let d = |n: &str| {
            let c = variant(n).unwrap().config();
            (c.embed_dim, c.depth, c.num_heads)
        };
        assert_eq!(d("ar-s"), (384, 12, 6));
        assert_eq!(d("deit-b"), (768, 12, 12));
        assert_eq!(d("vit-l"), (1024, 24, 16));
        assert_eq!(
            variant("deit-s").unwrap().native_pretrained_cfg().mean,
            [0.485, 0.456, 0.406]
        );
        assert_eq!(
            variant("ar-l").unwrap().native_pretrained_cfg().std,
            [0.5; 3]
        );
        // All seven: crop 0.9, bicubic (timm's hub configs for these weights).
        for v in VARIANTS {
            let p = v.native_pretrained_cfg();
            assert_eq!(
                (p.crop_pct, p.interpolation.as_str()),
                (0.9, "bicubic"),
                "{}",
                v.name
            );
        }
    }
}
