//! GEMM throughput on the ViT-S and ViT-B linear shapes at batch 8 (`x · Wᵀ`, m = 1576 tokens):
//! candle's matmul (the `gemm` crate with its own threading) against `kernels::linear_forward`, which
//! splits products with a long inner dimension over output columns. Best of 5 after a warm-up.
//!
//!     cargo run --release -p model --example mm_speed
use candle_core::{Device, Tensor};
use std::time::Instant;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn best_of(mut f: impl FnMut() -> anyhow::Result<()>) -> anyhow::Result<f64> {
    f()?;
    let mut best = f64::MAX;
    for _ in 0..5 {
        let t = Instant::now();
        f()?;
        best = best.min(t.elapsed().as_secs_f64());
    }
    Ok(best)
}

fn main() -> anyhow::Result<()> {
    model::keep_freed_memory();
    let shapes = [
        (1576, 1152, 384),
        (1576, 1536, 384),
        (1576, 384, 1536),
        (1576, 384, 384),
        (1576, 2304, 768),
        (1576, 3072, 768),
        (1576, 768, 3072),
        (1576, 768, 768),
    ];
    for (m, n, k) in shapes {
        let a = Tensor::randn(0f32, 1.0, (m, k), &Device::Cpu)?;
        let w = Tensor::randn(0f32, 1.0, (n, k), &Device::Cpu)?;
        let wt = w.t()?;
        let candle = best_of(|| Ok(a.matmul(&wt).map(drop)?))?;
        let (av, wv): (Vec<f32>, Vec<f32>) =
            (a.flatten_all()?.to_vec1()?, w.flatten_all()?.to_vec1()?);
        let ours = best_of(|| {
            model::kernels::linear_forward(&av, &wv, None, None, m, k, n);
            Ok(())
        })?;
        let f = 2.0 * (m * n * k) as f64 / 1e9;
        println!(
            "m{m} n{n} k{k}: candle matmul {:.0} GFLOP/s, kernels::linear_forward {:.0} GFLOP/s",
            f / candle,
            f / ours
        );
    }
    Ok(())
}
