//! The untrusted-input parsers of `model` (safetensors weights with their shape checks, model
//! `config.json`) on a fixed budget of deterministically mutated inputs: Ok or a typed error,
//! never a panic. Also replays the crash corpus under `fuzz/regressions/`.

#[path = "support/mutate.rs"]
mod mutate;

use candle_core::Device;
use model::{Vit, VitConfig};
use std::collections::BTreeMap;
use std::path::Path;

const CASES: usize = 10_000;

fn tiny() -> VitConfig {
    let mut c = VitConfig::vit(8, 1, 2, 8, 4);
    c.num_classes = 3;
    c
}

/// What loading a checkpoint does with the bytes: header, tensor table, naming, shape checks.
pub fn load_weights(bytes: &[u8]) -> bool {
    let dev = Device::Cpu;
    let Ok(t) = model::weights::read_safetensors_bytes(bytes, Path::new("fuzz.safetensors"), &dev)
    else {
        return false;
    };
    let t = match model::Naming::detect(t.keys()) {
        model::Naming::Timm => t,
        model::Naming::Transformers => {
            match model::weights::transformers_to_timm(t, "fuzz.safetensors") {
                Ok(t) => t,
                Err(_) => return false,
            }
        }
    };
    Vit::from_tensors(&tiny(), t, &dev, "fuzz.safetensors").is_ok()
}

fn weight_seeds() -> Vec<Vec<u8>> {
    let dir = tempfile::tempdir().unwrap();
    let vit = Vit::random(&tiny(), 1, &Device::Cpu).unwrap();
    let p = dir.path().join("m.safetensors");
    model::weights::save_params(vit.params(), &p).unwrap();
    let full = std::fs::read(&p).unwrap();
    // A two-tensor file keeps mutations near the header and the table.
    let mut small = BTreeMap::new();
    let snap = vit.params().snapshot().unwrap();
    for k in ["cls_token", "head.bias"] {
        small.insert(k.to_string(), snap[k].clone());
    }
    let q = dir.path().join("s.safetensors");
    model::weights::write_safetensors(&small, &q).unwrap();
    vec![full, std::fs::read(&q).unwrap()]
}

#[test]
fn safetensors_never_panic() {
    let seeds = weight_seeds();
    assert!(load_weights(&seeds[0]), "the valid seed must load");
    mutate::never_panics(
        "safetensors",
        0x5AFE,
        CASES,
        &seeds,
        &mutate::regressions("safetensors"),
        load_weights,
    );
}

fn config_seeds() -> Vec<Vec<u8>> {
    let timm = r#"{"architecture": "vit_base_patch16_224", "num_classes": 10,
        "model_args": {"img_size": 32, "patch_size": 8, "embed_dim": 32, "depth": 2,
        "num_heads": 2, "mlp_ratio": 4.0, "qkv_bias": true, "global_pool": "token"},
        "pretrained_cfg": {"input_size": [3, 32, 32], "mean": [0.485, 0.456, 0.406],
        "std": [0.229, 0.224, 0.225], "crop_pct": 0.875, "interpolation": "bicubic"}}"#;
    let hf = r#"{"model_type": "vit", "hidden_size": 64, "num_hidden_layers": 2,
        "num_attention_heads": 4, "intermediate_size": 256, "image_size": 48, "patch_size": 16,
        "num_channels": 3, "layer_norm_eps": 1e-12, "qkv_bias": true,
        "id2label": {"0": "a", "1": "b"}}"#;
    vec![timm.as_bytes().to_vec(), hf.as_bytes().to_vec()]
}

/// Parses a config; an accepted one must also be usable (its sizes pass validation again).
pub fn parse_config(bytes: &[u8]) -> bool {
    let Ok(text) = std::str::from_utf8(bytes) else {
        return false;
    };
    match model::config::parse_config_json(text, Path::new("config.json")) {
        Ok(p) => {
            p.vit.validate().unwrap();
            if let Some(pc) = &p.pretrained {
                pc.validate().unwrap();
            }
            true
        }
        Err(_) => false,
    }
}

#[test]
fn config_json_never_panics() {
    let seeds = config_seeds();
    assert!(seeds.iter().all(|s| parse_config(s)));
    mutate::never_panics(
        "config_json",
        0xC0F1,
        CASES,
        &seeds,
        &mutate::regressions("config_json"),
        parse_config,
    );
}
