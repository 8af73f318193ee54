//! Where one ViT-S/16 block spends its inference time at batch 8 (`bench/NOTES.md`, after
//! change 26): each op of the inference path timed separately, averaged over 25 iterations
//! after 5 warm-up ones.
//!
//!     cargo run --release -p model --example block_times
use candle_core::{DType, Device, Tensor};
use model::ops;
use std::time::Instant;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    model::keep_freed_memory();
    let dev = Device::Cpu;
    let (b, n, d, h, hid) = (8usize, 197usize, 384usize, 6usize, 1536usize);
    let x = Tensor::randn(0f32, 1.0, (b, n, d), &dev)?;
    let (lw, lb) = (
        Tensor::ones(d, DType::F32, &dev)?,
        Tensor::zeros(d, DType::F32, &dev)?,
    );
    let w = |o: usize, i: usize| Tensor::randn(0f32, 0.02, (o, i), &dev);
    let z = |o: usize| Tensor::zeros(o, DType::F32, &dev);
    let (wq, bq, wp, bp) = (w(3 * d, d)?, z(3 * d)?, w(d, d)?, z(d)?);
    let (w1, b1, w2, b2) = (w(hid, d)?, z(hid)?, w(d, hid)?, z(d)?);
    let names = [
        "ln1",
        "qkv",
        "attention",
        "proj+residual",
        "ln2",
        "fc1",
        "gelu",
        "fc2+residual",
    ];
    let (warm, iters) = (5, 25);
    let mut t = [0f64; 8];
    for it in 0..warm + iters {
        let mut lap = Instant::now();
        let mut k = 0;
        let mut tick = |t: &mut [f64; 8]| {
            if it >= warm {
                t[k] += lap.elapsed().as_secs_f64();
            }
            k += 1;
            lap = Instant::now();
        };
        let y = ops::layer_norm_value(&x, &lw, &lb, 1e-6)?;
        tick(&mut t);
        let qkv = ops::linear_value(&y, &wq, Some(&bq), None)?;
        tick(&mut t);
        let o = ops::attention_value(&qkv, h, 0.125, n)?;
        tick(&mut t);
        let x1 = ops::linear_value(&o, &wp, Some(&bp), Some(&x))?;
        tick(&mut t);
        let y = ops::layer_norm_value(&x1, &lw, &lb, 1e-6)?;
        tick(&mut t);
        let u = ops::linear_value(&y, &w1, Some(&b1), None)?;
        tick(&mut t);
        let g = ops::gelu_erf_value(&u)?;
        tick(&mut t);
        ops::linear_value(&g, &w2, Some(&b2), Some(&x1))?;
        tick(&mut t);
    }
    let total: f64 = t.iter().sum();
    for (name, v) in names.iter().zip(t) {
        println!(
            "{name:>15}: {:6.2} ms ({:4.1} %)",
            v / iters as f64 * 1e3,
            100.0 * v / total
        );
    }
    println!("block: {:.2} ms", total / iters as f64 * 1e3);
    Ok(())
}
