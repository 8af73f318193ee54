//! Loader throughput: 500x375 JPEGs to normalised 224x224 tensors (the paper's eval transform).
//!
//!     cargo run --release -p data --example throughput -- [num_images] [threads]
//!
//! The images are the photographs of `tests/fixtures/preprocess` resized to 500x375 and saved as
//! quality-90 JPEGs in a temporary ImageNet-style folder. When `python3` with torchvision is
//! available, PIL + torchvision (ImageFolder + DataLoader with as many workers) is timed on the
//! same files in the same run.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use data::loader::{EvalSource, Loader, LoaderOptions};
use data::preprocess::{decode_rgb, resize_exact, Interpolation};
use data::{Benchmark, EvalDataset, EvalTransform};

const PYTHON: &str = r#"
import sys, time, torch, torchvision.transforms as T
from torchvision.datasets import ImageFolder
root, threads, bs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
tf = T.Compose([T.Resize(256), T.CenterCrop(224), T.ToTensor(), T.Normalize([0.5]*3, [0.5]*3)])
ds = ImageFolder(root, tf)
dl = torch.utils.data.DataLoader(ds, batch_size=bs, num_workers=threads)
t = time.time(); n = 0
for x, y in dl: n += x.shape[0]
print(f"{n / (time.time() - t):.1f}")
"#;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let n: usize = args.get(1).map(|s| s.parse()).transpose()?.unwrap_or(512);
    let threads: usize = args
        .get(2)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        });
    let batch = 64;

    let fixtures =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/preprocess/images");
    let mut photos = Vec::new();
    for e in std::fs::read_dir(&fixtures)? {
        photos.push(resize_exact(
            &decode_rgb(&e?.path())?,
            500,
            375,
            Interpolation::Bilinear,
        ));
    }
    anyhow::ensure!(
        !photos.is_empty(),
        "no photographs in {}",
        fixtures.display()
    );
    let tmp = tempfile::tempdir()?;
    let root = tmp.path().join("val");
    let wnids = data::labels::imagenet_wnids();
    for i in 0..n {
        let dir = root.join(wnids[i % 10]);
        std::fs::create_dir_all(&dir)?;
        let mut img = photos[i % photos.len()].clone();
        if (i / photos.len()) % 2 == 1 {
            image::imageops::flip_horizontal_in_place(&mut img);
        }
        let mut f =
            std::io::BufWriter::new(std::fs::File::create(dir.join(format!("{i:06}.JPEG")))?);
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut f, 90).encode_image(&img)?;
    }

    let ds = EvalDataset::open(Benchmark::ImageNetVal, &root)?;
    let source = Arc::new(EvalSource {
        samples: ds.samples,
        transform: EvalTransform::PAPER,
    });
    let opts = LoaderOptions {
        batch_size: batch,
        threads,
        prefetch: 2,
    };
    // Warm the page cache and the thread pool once.
    for b in Loader::new(source.clone(), (0..n.min(batch)).collect(), opts, None)? {
        b?;
    }
    let t = Instant::now();
    let mut count = 0;
    for b in Loader::new(source, (0..n).collect(), opts, None)? {
        count += b?.len();
    }
    let rust = count as f64 / t.elapsed().as_secs_f64();
    println!("rust loader: {rust:.1} images/s ({count} 500x375 JPEGs -> 3x224x224 f32, {threads} threads, batch {batch})");

    let py = std::process::Command::new("python3")
        .args([
            "-c",
            PYTHON,
            root.to_str().unwrap(),
            &threads.to_string(),
            &batch.to_string(),
        ])
        .output();
    match py {
        Ok(out) if out.status.success() => {
            let s = String::from_utf8_lossy(&out.stdout);
            let v: f64 = s.trim().parse().unwrap_or(f64::NAN);
            println!("PIL + torchvision: {v:.1} images/s (same files, {threads} workers) -> rust is {:.2}x", rust / v);
        }
        _ => println!(
            "PIL + torchvision: not measured (python3 with torch/torchvision not available)"
        ),
    }
    Ok(())
}
