//! A tiny ViT whose predictions are known by construction, and solid-colour images for it.
//!
//! The model (16×16 input, one 16×16 patch, width 4, one block, 1000 classes) computes the
//! mean normalised red and green of the image, u and v, as the patch token `[u, v, -u, -v]`.
//! The query/key weights are zero, so the class token attends 50/50 to itself (a zero vector)
//! and the patch; the value path is the identity and the projection doubles, so the class
//! token becomes LayerNorm(patch) = √2·(cos θ, sin θ, −cos θ, −sin θ) with θ = atan2(v, u):
//! the colour's hue angle in the red/green plane. The MLP is zero and the final LayerNorm
//! leaves this unit-variance vector as it is. Class k of the active set sits at angle φ_k on a
//! circle of 16 positions (22.5° apart): logit_k = 10·√2·cos(θ − φ_k); every other class has
//! logit −100. So an image of the colour of position q ranks the active classes by their
//! circular distance to q: the class at q first, then q±1, then q±2 (top-5).
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::Path;

use candle_core::{Device, Tensor};

/// Active classes by circle position (index = position).
pub const POSITIONS: [u32; 16] = [
    0, 333, 666, 409, 530, 606, 783, 407, 585, 728, 6, 335, 684, 1, 263, 487,
];

pub fn angle(q: usize) -> f64 {
    (q as f64) * std::f64::consts::TAU / 16.0
}

/// The solid colour of position `q` (red/green on a circle around mid-grey).
pub fn colour(q: usize) -> [u8; 3] {
    let a = angle(q);
    [
        (127.5 + 127.0 * a.cos()).round() as u8,
        (127.5 + 127.0 * a.sin()).round() as u8,
        40,
    ]
}

/// Writes a solid image of position `q` as PNG bytes at `path` (whatever its extension says:
/// the decoder sniffs the content).
pub fn write_solid(path: &Path, w: u32, h: u32, q: usize) {
    let img = image::RgbImage::from_pixel(w, h, image::Rgb(colour(q)));
    let mut buf = Vec::new();
    image::DynamicImage::ImageRgb8(img)
        .write_to(&mut std::io::Cursor::new(&mut buf), image::ImageFormat::Png)
        .unwrap();
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, buf).unwrap();
}

const CONFIG: &str = r#"{
  "architecture": "vit_tiny_patch16_224",
  "num_classes": 1000,
  "model_args": {"img_size": 16, "patch_size": 16, "embed_dim": 4, "depth": 1,
                 "num_heads": 1, "mlp_ratio": 1.0, "num_classes": 1000},
  "pretrained_cfg": {"input_size": [3, 16, 16], "interpolation": "INTERP", "crop_pct": 0.9,
                     "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]}
}"#;

/// Writes the model (`model.safetensors` + `config.json`) into `dir`; `active[q]` is the class
/// at position q. Its own preprocessing (the official protocol's) is bicubic.
pub fn write_model(dir: &Path, active: &[u32]) {
    write_model_with(dir, active, "bicubic")
}

/// [`write_model`] with the interpolation of the model's own preprocessing.
pub fn write_model_with(dir: &Path, active: &[u32], interpolation: &str) {
    let config = CONFIG.replace("INTERP", interpolation);
    let cfg = model::config::parse_config_json(&config, Path::new("config.json"))
        .unwrap()
        .vit;
    let dev = Device::Cpu;
    let mut t: BTreeMap<String, Tensor> = BTreeMap::new();
    for (name, shape) in model::expected_shapes(&cfg) {
        let n: usize = shape.iter().product();
        let v: Vec<f32> = if name.contains("norm") && name.ends_with("weight") {
            vec![1.0; n]
        } else {
            vec![0.0; n]
        };
        t.insert(name, Tensor::from_vec(v, shape, &dev).unwrap());
    }
    let mut set = |name: &str, v: Vec<f32>| {
        let shape = t[name].dims().to_vec();
        t.insert(name.into(), Tensor::from_vec(v, shape, &dev).unwrap());
    };
    // Patch embedding: channel means of red and green, and their negatives.
    let hw = 16 * 16;
    let mut w = vec![0f32; 4 * 3 * hw];
    for i in 0..hw {
        w[i] = 1.0 / hw as f32; // row 0, channel 0
        w[3 * hw + hw + i] = 1.0 / hw as f32; // row 1, channel 1
        w[2 * 3 * hw + i] = -1.0 / hw as f32; // row 2, channel 0
        w[3 * 3 * hw + hw + i] = -1.0 / hw as f32; // row 3, channel 1
    }
    set("patch_embed.proj.weight", w);
    let mut qkv = vec![0f32; 12 * 4];
    for i in 0..4 {
        qkv[(8 + i) * 4 + i] = 1.0;
    }
    set("blocks.0.attn.qkv.weight", qkv);
    let mut proj = vec![0f32; 16];
    for i in 0..4 {
        proj[i * 4 + i] = 2.0;
    }
    set("blocks.0.attn.proj.weight", proj);
    let mut head = vec![0f32; 1000 * 4];
    let mut bias = vec![-100f32; 1000];
    for (q, &c) in active.iter().enumerate() {
        let a = angle(q);
        head[c as usize * 4] = 10.0 * a.cos() as f32;
        head[c as usize * 4 + 1] = 10.0 * a.sin() as f32;
        bias[c as usize] = 0.0;
    }
    set("head.weight", head);
    set("head.bias", bias);
    std::fs::create_dir_all(dir).unwrap();
    model::weights::write_safetensors(&t, &dir.join("model.safetensors")).unwrap();
    std::fs::write(dir.join("config.json"), config).unwrap();
}

pub fn run(args: &[&str]) -> evaluate::RunSummary {
    let a = <evaluate::EvalArgs as clap::Parser>::try_parse_from(
        std::iter::once("evaluate").chain(args.iter().copied()),
    )
    .unwrap();
    evaluate::run(&a).unwrap()
}

pub fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-9
}
