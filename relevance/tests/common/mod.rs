//! A tiny ViT with weights large enough for clearly non-uniform attention, and a fixed batch.
#![allow(dead_code)] // each test binary uses a different subset

use candle_core::{Device, Tensor};
use model::{Vit, VitConfig};
use rand::{Rng, SeedableRng};
use std::collections::BTreeMap;

pub fn tiny_config() -> VitConfig {
    VitConfig {
        img_size: 16,
        patch_size: 4,
        in_chans: 3,
        embed_dim: 16,
        depth: 2,
        num_heads: 2,
        mlp_hidden: 32,
        num_classes: 5,
        qkv_bias: true,
        layer_norm_eps: 1e-6,
    }
}

/// Uniform weights in ±`scale` (LayerNorm gains around 1), reproducible from `seed`.
pub fn tiny_model(seed: u64, scale: f32) -> Vit {
    let cfg = tiny_config();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let dev = Device::Cpu;
    let tensors: BTreeMap<String, Tensor> = model::expected_shapes(&cfg)
        .into_iter()
        .map(|(name, shape)| {
            let n: usize = shape.iter().product();
            let is_gain = name.contains("norm") && name.ends_with("weight");
            let v: Vec<f32> = (0..n)
                .map(|_| {
                    let u = rng.random::<f32>() * 2.0 - 1.0;
                    if is_gain {
                        1.0 + 0.2 * u
                    } else {
                        scale * u
                    }
                })
                .collect();
            (name, Tensor::from_vec(v, shape, &dev).unwrap())
        })
        .collect();
    Vit::from_tensors(&cfg, tensors, &dev, "test weights").unwrap()
}

/// Two images in [-1, 1] and masks: a hard square, and a soft-edged square with a border of
/// value 0.8, like the fractional edges bilinear mask resizing produces.
pub fn batch(seed: u64) -> (Tensor, Tensor) {
    let cfg = tiny_config();
    let s = cfg.img_size;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let x: Vec<f32> = (0..2 * 3 * s * s)
        .map(|_| rng.random::<f32>() * 2.0 - 1.0)
        .collect();
    let mut m = vec![0f32; 2 * s * s];
    for r in 0..s {
        for c in 0..s {
            if (4..10).contains(&r) && (3..11).contains(&c) {
                m[r * s + c] = 1.0;
            }
            let d = (r as f32 - 9.5).abs().max((c as f32 - 8.5).abs());
            m[s * s + r * s + c] = (5.3 - d).clamp(0.0, 1.0);
        }
    }
    let dev = Device::Cpu;
    (
        Tensor::from_vec(x, (2, 3, s, s), &dev).unwrap(),
        Tensor::from_vec(m, (2, 1, s, s), &dev).unwrap(),
    )
}
