//! GEMM throughput of candle's CPU matmul (`x · Wᵀ`, the linear layers' product) on the ViT-S and
//! ViT-B shapes at batch 8: a quick probe to compare against other BLAS libraries.
use candle_core::{Device, Tensor};
use std::time::Instant;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    let shapes = [
        (1576, 1152, 384),
        (1576, 1536, 384),
        (1576, 384, 1536),
        (1576, 384, 384),
        (1576, 2304, 768),
        (1576, 3072, 768),
        (1576, 768, 3072),
        (384, 1536, 1576),
        (1576, 384, 1152),
    ];
    for (m, n, k) in shapes {
        let a = Tensor::randn(0f32, 1.0, (m, k), &Device::Cpu)?;
        let w = Tensor::randn(0f32, 1.0, (n, k), &Device::Cpu)?;
        let wt = w.t()?;
        a.matmul(&wt)?;
        let mut best = f64::MAX;
        for _ in 0..5 {
            let t = Instant::now();
            a.matmul(&wt)?;
            best = best.min(t.elapsed().as_secs_f64());
        }
        let gflops = 2.0 * (m * n * k) as f64 / best / 1e9;
        println!("m{m} n{n} k{k}: {gflops:.1} GFLOP/s");
    }
    Ok(())
}
