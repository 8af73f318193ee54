//! Prints the time of CE training steps and inference for a given ViT size (a quick probe;
//! the full benchmark is `cargo run --release -p experiments -- bench`).
//! Usage: step_speed DIM DEPTH HEADS MLP IMG PATCH CLASSES BATCH
use candle_core::{Device, Tensor, D};
use model::{Vit, VitConfig};
use std::time::Instant;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    let a: Vec<usize> = std::env::args()
        .skip(1)
        .map(|s| s.parse().unwrap())
        .collect();
    let (dim, depth, heads, mlp, img, patch, classes, batch) =
        (a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7]);
    let mut cfg = VitConfig::vit(dim, depth, heads, img, patch);
    cfg.mlp_hidden = mlp;
    cfg.num_classes = classes;
    let dev = Device::Cpu;
    let vit = Vit::random(&cfg, 0, &dev)?;
    let x = Tensor::randn(0f32, 1.0, (batch, 3, img, img), &dev)?;
    let y = Tensor::new(&vec![0u32; batch][..], &dev)?;
    let iters = a.get(8).copied().unwrap_or(4);
    for i in 0..iters {
        let t = Instant::now();
        let _ = vit.forward(&x)?;
        let inf = t.elapsed().as_secs_f64();
        let t = Instant::now();
        let f = vit.forward_features(&x, model::Mode::Train)?;
        let logits = vit.forward_head(&f, model::Mode::Train)?;
        let loss = candle_nn::loss::nll(&candle_nn::ops::log_softmax(&logits, D::Minus1)?, &y)?;
        let fw = t.elapsed().as_secs_f64();
        let g = loss.backward()?;
        let all = t.elapsed().as_secs_f64();
        drop(g);
        println!("iter {i}: inference {inf:.4}s  train fwd {fw:.4}s  fwd+bwd {all:.4}s");
    }
    Ok(())
}
