//! GEMM throughput of candle's CPU matmul for a ViT-S qkv-sized product (a quick probe).
use candle_core::{Device, Tensor};
use std::time::Instant;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    let a = Tensor::randn(0f32, 1.0, (1576, 384), &Device::Cpu)?;
    let b = Tensor::randn(0f32, 1.0, (384, 1152), &Device::Cpu)?;
    for _ in 0..3 {
        a.matmul(&b)?;
    }
    let t = Instant::now();
    for _ in 0..20 {
        a.matmul(&b)?;
    }
    let dt = t.elapsed().as_secs_f64() / 20.0;
    println!(
        "candle GFLOP/s {:.1}",
        2.0 * 1576.0 * 384.0 * 1152.0 / dt / 1e9
    );
    let w = Tensor::randn(0f32, 1.0, (1152, 384), &Device::Cpu)?;
    let wt = w.t()?;
    for _ in 0..3 {
        a.matmul(&wt)?;
    }
    let t = Instant::now();
    for _ in 0..20 {
        a.matmul(&wt)?;
    }
    let dt = t.elapsed().as_secs_f64() / 20.0;
    println!(
        "candle x W^T GFLOP/s {:.1}",
        2.0 * 1576.0 * 384.0 * 1152.0 / dt / 1e9
    );
    Ok(())
}
