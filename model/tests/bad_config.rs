//! A model `config.json` that timm would refuse is refused here too, naming the file and the
//! field; a garbage `config.json` beside a weights file is reported as such.

use candle_core::Device;
use model::config::parse_config_json;
use model::{HubOptions, VitConfig};
use std::path::Path;

fn timm(model_args: &str, pretrained: &str) -> String {
    format!(
        r#"{{"architecture": "vit_base_patch16_224", "num_classes": 10,
        "model_args": {{{model_args}}},
        "pretrained_cfg": {{"input_size": [3, 224, 224], "mean": [0.485, 0.456, 0.406],
        "std": [0.229, 0.224, 0.225], "crop_pct": 0.875, "interpolation": "bicubic" {pretrained}}}}}"#
    )
}

fn refused(text: &str, field: &str) {
    let path = Path::new("/models/m/config.json");
    match parse_config_json(text, path) {
        Ok(p) => panic!("accepted {field}: {:?} {:?}\n{text}", p.vit, p.pretrained),
        Err(e) => {
            let msg = e.to_string();
            assert!(msg.contains("/models/m/config.json"), "{msg}");
            assert!(msg.contains(field), "expected `{field}` in: {msg}");
        }
    }
}

#[test]
fn valid_configs_still_parse() {
    let p = parse_config_json(&timm("", ""), Path::new("c.json")).unwrap();
    assert_eq!(p.vit.num_classes, 10);
    let pc = p.pretrained.unwrap();
    assert_eq!(pc.crop_pct, 0.875);
    // timm's zoo has crop_pct 1.0 (e.g. the 384-pixel ViTs).
    let t = timm("", "").replace("0.875", "1.0");
    assert_eq!(
        parse_config_json(&t, Path::new("c.json"))
            .unwrap()
            .pretrained
            .unwrap()
            .crop_pct,
        1.0
    );
}

#[test]
fn architecture_fields_are_checked() {
    refused(&timm(r#""img_size": 0"#, ""), "img_size");
    refused(&timm(r#""img_size": 100"#, ""), "img_size");
    refused(&timm(r#""patch_size": 0"#, ""), "patch");
    refused(&timm(r#""embed_dim": 0"#, ""), "embed");
    refused(&timm(r#""embed_dim": 100"#, ""), "heads");
    refused(&timm(r#""depth": 0"#, ""), "depth");
    refused(&timm(r#""num_heads": 0"#, ""), "heads");
    refused(&timm(r#""in_chans": 1"#, ""), "in_chans");
    refused(&timm(r#""mlp_ratio": 0.0"#, ""), "mlp");
    refused(&timm(r#""img_size": 1e9"#, ""), "img_size");
    refused(&timm(r#""depth": 100000000000"#, ""), "depth");
    refused(
        &timm("", "").replace(r#""num_classes": 10"#, r#""num_classes": 0"#),
        "num_classes",
    );
    // Absurd sizes are refused before anything is allocated for them.
    refused(&timm(r#""embed_dim": 1152921504606846976"#, ""), "embed");
    let hf = r#"{"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
        "intermediate_size": 256, "image_size": 0, "patch_size": 16}"#;
    refused(hf, "img_size");
}

#[test]
fn preprocessing_fields_are_checked() {
    let pre = |field: &str, value: &str| {
        let base = timm("", "");
        let start = base.find(&format!("\"{field}\"")).unwrap();
        let rest = &base[start..];
        let end = start
            + if rest.starts_with("\"mean\"")
                || rest.starts_with("\"std\"")
                || rest.starts_with("\"input_size\"")
            {
                rest.find(']').unwrap() + 1
            } else {
                rest.find(',').unwrap_or(rest.find('}').unwrap())
            };
        format!("{}\"{field}\": {value}{}", &base[..start], &base[end..])
    };
    refused(&pre("crop_pct", "0"), "crop_pct");
    refused(&pre("crop_pct", "-0.5"), "crop_pct");
    refused(&pre("crop_pct", "1.5"), "crop_pct");
    refused(&pre("crop_pct", "\"x\""), "crop_pct");
    refused(&pre("std", "[0.229, 0, 0.225]"), "std");
    refused(&pre("std", "[0.229, -0.2, 0.225]"), "std");
    refused(&pre("std", "[0.229, 0.225]"), "std");
    refused(&pre("mean", "[0.5, 0.5, 0.5, 0.5]"), "mean");
    refused(&pre("mean", "\"imagenet\""), "mean");
    refused(&pre("interpolation", "\"bicubicc\""), "interpolation");
    refused(&pre("input_size", "[3, 0, 0]"), "input_size");
}

#[test]
fn garbage_config_beside_weights_is_named_as_unparseable() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = VitConfig::vit(32, 2, 2, 32, 8);
    cfg.num_classes = 10;
    let vit = model::Vit::random(&cfg, 0, &Device::Cpu).unwrap();
    let w = dir.path().join("model.safetensors");
    model::weights::save_params(vit.params(), &w).unwrap();
    let c = dir.path().join("config.json");
    std::fs::write(&c, "{\"architecture\": \"vit_base_patch16_224\", oops").unwrap();
    let e = match model::load(
        None,
        Some(w.to_str().unwrap()),
        &HubOptions::from_env(),
        &Device::Cpu,
    ) {
        Ok(_) => panic!("loaded with a garbage config.json"),
        Err(e) => e.to_string(),
    };
    assert!(e.contains(c.to_str().unwrap()), "{e}");
    assert!(e.contains("not valid JSON"), "{e}");
    assert!(!e.contains("no config.json"), "{e}");
}
