//! Where a ViT-S relevance training step (batch 8, random weights) spends its time: the
//! training forward, the backward for the gradient weights G, the relevance map and loss, the
//! parameter backward, and AdamW. Mean of 5 steps after 2 warm-up steps.
//!
//!     cargo run --release -p train --example step_phases
use candle_core::{Device, Tensor};
use std::time::Instant;
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
fn main() -> anyhow::Result<()> {
    model::keep_freed_memory();
    let dev = Device::Cpu;
    let b = 8;
    let vit = model::Vit::random(&model::VitConfig::vit_small(), 0, &dev)?;
    let x = Tensor::randn(0f32, 1.0, (b, 3, 224, 224), &dev)?;
    let masks = Tensor::rand(0f32, 1.0, (b, 1, 224, 224), &dev)?
        .ge(0.5)?
        .to_dtype(candle_core::DType::F32)?;
    let targets: Vec<u32> = (0..b as u32).map(|i| i * 97 % 1000).collect();
    let cfg = relevance::LossConfig::default();
    let mut opt = train::optim::AdamW::new(train::optim::AdamWConfig::default());
    let mut acc = [0f64; 6];
    for it in 0..7 {
        let t0 = Instant::now();
        let f = vit.forward_train(&x)?;
        let t1 = Instant::now();
        let grads = relevance::map::attention_grads(&f, &targets)?;
        let t2 = Instant::now();
        let m = relevance::map::map_from_attention(vit.config(), &f.attn, &grads, false)?;
        let terms = relevance::loss::loss_terms(&m.norm.map, &masks, &f.logits, &targets, &cfg)?;
        let t3 = Instant::now();
        let store = f.backward(&terms.total)?;
        let t4 = Instant::now();
        let g: std::collections::BTreeMap<String, Tensor> = vit
            .params()
            .names()
            .map(|n| (n.clone(), store.get(n).expect("every parameter")))
            .collect();
        opt.step(vit.params(), &g)?;
        drop(store);
        drop(g);
        drop(terms);
        drop(m);
        drop(f);
        let t5 = Instant::now();
        let s = |a: Instant, b: Instant| (b - a).as_secs_f64();
        if it >= 2 {
            for (i, v) in [
                s(t0, t1),
                s(t1, t2),
                s(t2, t3),
                s(t3, t4),
                s(t4, t5),
                s(t0, t5),
            ]
            .iter()
            .enumerate()
            {
                acc[i] += v / 5.0;
            }
        }
    }
    println!("forward {:.3}  dA backward {:.3}  map+loss {:.3}  backward {:.3}  adamw+drop {:.3}  total {:.3}", acc[0], acc[1], acc[2], acc[3], acc[4], acc[5]);
    Ok(())
}
