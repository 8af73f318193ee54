//! `experiments bench`: a training step, inference and the evaluation pipeline, timed on this
//! machine (warm-up, then the median of several runs), each phase in its own process so that
//! its peak memory is its own. With a Python that has torch + timm + torchvision, the reference
//! script `bench/torch_reference.py` runs the same phases in the same invocation and one
//! `compare <name> rust=<seconds> torch=<seconds> ratio=<rust/torch>` line is printed per
//! comparison.

use anyhow::{bail, Context, Result};
use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// Python with torch, timm and torchvision for the reference (default: python3 on PATH, if
    /// it can import them).
    #[arg(long)]
    pub torch: Option<String>,
    /// Skip the PyTorch reference.
    #[arg(long)]
    pub no_torch: bool,
    /// Timed runs per phase (after one warm-up run).
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// Device of the Rust phases and of the PyTorch reference: cpu, cuda or auto.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Precision of the inference phases (bf16: GPUs; training is always f32).
    #[arg(long, value_enum, default_value_t = BenchDtype::F32)]
    pub dtype: BenchDtype,
    /// Rounds: every phase runs this many times, alternating Rust and PyTorch processes, and
    /// the median over the rounds is reported (other work on the machine then hits both sides
    /// alike instead of one phase).
    #[arg(long, default_value_t = 1)]
    pub rounds: usize,
    /// Images in the evaluation-pipeline folder (500x375 JPEGs).
    #[arg(long, default_value_t = 64)]
    pub images: usize,
    /// Where the generated JPEGs go.
    #[arg(long, default_value = "results/bench")]
    pub out: PathBuf,
    /// Run one phase in this process and print its JSON result (used internally).
    #[arg(long, hide = true)]
    pub phase: Option<String>,
}

/// Precision of the inference phases.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BenchDtype {
    /// Single precision.
    F32,
    /// bfloat16 (GPUs; on a CPU candle widens it to f32, which is slower).
    Bf16,
}

impl BenchDtype {
    fn name(self) -> &'static str {
        match self {
            Self::F32 => "f32",
            Self::Bf16 => "bf16",
        }
    }
}

/// What one phase measured.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct PhaseResult {
    pub seconds: f64,
    pub peak_mib: f64,
}

const BATCH: usize = 8;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Median wall time of `runs` calls after one warm-up; each call ends when the device is done.
fn time_runs(runs: usize, dev: &Device, mut f: impl FnMut() -> Result<()>) -> Result<f64> {
    f()?;
    dev.synchronize()?;
    let mut t = Vec::with_capacity(runs);
    for _ in 0..runs.max(1) {
        let s = Instant::now();
        f()?;
        dev.synchronize()?;
        t.push(s.elapsed().as_secs_f64());
    }
    Ok(median(t))
}

/// Peak resident memory of this process (VmHWM), in MiB.
pub fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(f64::NAN)
}

/// Deterministic pseudo-random data (candle's CPU RNG cannot be seeded).
fn noise(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

fn run_phase(phase: &str, args: &BenchArgs) -> Result<PhaseResult> {
    let dev = model::device(&args.device)?;
    let x = Tensor::from_vec(noise(BATCH * 3 * 224 * 224, 1), (BATCH, 3, 224, 224), &dev)?;
    let dtype = match args.dtype {
        BenchDtype::F32 => candle_core::DType::F32,
        BenchDtype::Bf16 => candle_core::DType::BF16,
    };
    let seconds = match phase {
        "train_step" => {
            let vit = model::Vit::random(&model::VitConfig::vit_small(), 0, &dev)?;
            let masks: Vec<f32> = noise(BATCH * 224 * 224, 2)
                .into_iter()
                .map(|v| (v > 0.0) as u8 as f32)
                .collect();
            let masks = Tensor::from_vec(masks, (BATCH, 1, 224, 224), &dev)?;
            let targets: Vec<u32> = (0..BATCH as u32).map(|i| i * 97 % 1000).collect();
            let lc = relevance::LossConfig::default();
            let mut opt = train::optim::AdamW::new(train::optim::AdamWConfig {
                lr: 1e-6,
                ..Default::default()
            });
            time_runs(args.runs, &dev, || {
                let out = relevance::loss_and_grads(&vit, &x, &masks, &targets, &lc)?;
                opt.step(vit.params(), &out.grads)?;
                Ok(())
            })?
        }
        "infer_vit_s" | "infer_vit_b" => {
            let cfg = if phase == "infer_vit_s" {
                model::VitConfig::vit_small()
            } else {
                model::VitConfig::vit_base()
            };
            let vit = model::Vit::random(&cfg, 0, &dev)?.to_dtype(dtype)?;
            time_runs(args.runs, &dev, || {
                vit.forward(&x)?;
                Ok(())
            })?
        }
        // What `explain` computes per image and checkpoint: the paper's relevance map of one
        // 224 px image under ViT-B (one forward, one backward to the attention maps, the rule).
        "explain_vit_b" => {
            let vit = model::Vit::random(&model::VitConfig::vit_base(), 0, &dev)?;
            let one = x.narrow(0, 0, 1)?;
            time_runs(args.runs, &dev, || {
                relevance::explain(&vit, &one, relevance::Explainer::Relevance, None)?;
                Ok(())
            })?
        }
        "eval_pipeline" | "eval_decode" => {
            let dir = args.out.join("images").join("val");
            let ds = data::EvalDataset::open(data::Benchmark::ImageNetVal, &dir)?;
            let vit = if phase == "eval_pipeline" {
                Some(model::Vit::random(&model::VitConfig::vit_small(), 0, &dev)?.to_dtype(dtype)?)
            } else {
                None
            };
            let source = std::sync::Arc::new(data::loader::EvalSource {
                samples: ds.samples.clone(),
                transform: data::EvalTransform::PAPER,
            });
            time_runs(args.runs, &dev, || {
                let order: Vec<usize> = (0..source.samples.len()).collect();
                let opts = data::loader::LoaderOptions {
                    batch_size: BATCH,
                    threads: 0,
                    prefetch: 2,
                };
                for batch in data::loader::Loader::new(source.clone(), order, opts, None)? {
                    let b = batch?;
                    if let (false, Some(vit)) = (b.is_empty(), &vit) {
                        vit.forward(&b.images.to_device(&dev)?)?;
                    }
                }
                Ok(())
            })?
        }
        other => bail!("unknown bench phase {other}"),
    };
    Ok(PhaseResult {
        seconds,
        peak_mib: peak_rss_mib(),
    })
}

/// 500x375 JPEGs in an ImageNet-val layout (two class folders), made once.
fn ensure_images(dir: &Path, n: usize) -> Result<()> {
    let wnids = ["n01440764", "n01443537"];
    let have = wnids
        .iter()
        .map(|w| {
            std::fs::read_dir(dir.join(w))
                .map(|d| d.count())
                .unwrap_or(0)
        })
        .sum::<usize>();
    if have == n {
        return Ok(());
    }
    let _ = std::fs::remove_dir_all(dir);
    for i in 0..n {
        let w = wnids[i % 2];
        std::fs::create_dir_all(dir.join(w))?;
        let px = noise(500 * 375, 100 + i as u64);
        let img = image::RgbImage::from_fn(500, 375, |x, y| {
            let v = px[(y * 500 + x) as usize];
            let g = ((x as f32 / 500.0) * 180.0 + v * 30.0 + 40.0) as u8;
            image::Rgb([g, (y as f32 / 375.0 * 200.0) as u8, ((x ^ y) & 0xff) as u8])
        });
        let path = dir.join(w).join(format!("img_{i:04}.JPEG"));
        let mut f = std::io::BufWriter::new(std::fs::File::create(&path)?);
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut f, 90)
            .encode_image(&img)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

fn subprocess(cmd: &mut Command) -> Result<PhaseResult> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?} failed:\n{}", String::from_utf8_lossy(&out.stderr));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .context("no JSON result")?;
    Ok(serde_json::from_str(line)?)
}

fn find_python(args: &BenchArgs) -> Option<String> {
    if args.no_torch {
        return None;
    }
    let cand = args.torch.clone().unwrap_or_else(|| "python3".into());
    let ok = Command::new(&cand)
        .args(["-c", "import torch, timm, torchvision"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !ok && args.torch.is_some() {
        eprintln!(
            "{cand} cannot import torch, timm and torchvision: pip install torch torchvision timm"
        );
    }
    ok.then_some(cand)
}

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../bench/torch_reference.py")
}

pub fn run(args: &BenchArgs) -> Result<()> {
    if let Some(p) = &args.phase {
        let r = run_phase(p, args)?;
        println!("{}", serde_json::to_string(&r)?);
        return Ok(());
    }
    let threads = rayon::current_num_threads();
    ensure_images(&args.out.join("images").join("val"), args.images)?;
    let exe = std::env::current_exe()?;
    let rust = |phase: &str| -> Result<PhaseResult> {
        subprocess(
            Command::new(&exe)
                .args([
                    "bench",
                    "--phase",
                    phase,
                    "--runs",
                    &args.runs.to_string(),
                    "--device",
                    &args.device,
                    "--dtype",
                    args.dtype.name(),
                    "--out",
                ])
                .arg(&args.out)
                .arg("--images")
                .arg(args.images.to_string()),
        )
    };
    let python = find_python(args);
    let torch = |phase: &str| -> Result<Option<PhaseResult>> {
        let Some(py) = &python else { return Ok(None) };
        subprocess(
            Command::new(py)
                .arg(script())
                .args([
                    "--phase",
                    phase,
                    "--threads",
                    &threads.to_string(),
                    "--runs",
                    &args.runs.to_string(),
                    "--device",
                    &args.device,
                    "--dtype",
                    args.dtype.name(),
                ])
                .arg("--images")
                .arg(args.out.join("images").join("val")),
        )
        .map(Some)
    };
    println!(
        "threads: {threads}; batch {BATCH}; {} timed runs after one warm-up; median of {} round(s); device {}; inference {}",
        args.runs,
        args.rounds.max(1),
        args.device,
        args.dtype.name()
    );
    if python.is_none() {
        println!("no Python with torch + timm + torchvision found: Rust figures only (pip install torch torchvision timm; --torch PYTHON)");
    }
    let compare = |name: &str, r: f64, t: Option<f64>, unit: &str| match t {
        Some(t) => println!("compare {name} rust={r:.4} torch={t:.4} ratio={:.3}", r / t),
        None => println!("measure {name} rust={r:.4} {unit}"),
    };
    let memory = |name: &str, r: &PhaseResult, t: Option<PhaseResult>| {
        println!(
            "  {name}: peak memory rust {:.0} MiB{}",
            r.peak_mib,
            t.map(|t| format!(", torch {:.0} MiB", t.peak_mib))
                .unwrap_or_default()
        )
    };
    // Rust and PyTorch alternate within each round; medians over the rounds.
    let rounds = args.rounds.max(1);
    let median_of = |v: Vec<PhaseResult>| PhaseResult {
        seconds: median(v.iter().map(|p| p.seconds).collect()),
        peak_mib: median(v.iter().map(|p| p.peak_mib).collect()),
    };
    let both =
        |r_phase: &str, t_phases: &[&str]| -> Result<(PhaseResult, Vec<Option<PhaseResult>>)> {
            let mut rs = Vec::new();
            let mut ts: Vec<Vec<PhaseResult>> = vec![Vec::new(); t_phases.len()];
            for round in 0..rounds {
                // Alternate which side goes first.
                if round % 2 == 1 {
                    for (i, p) in t_phases.iter().enumerate() {
                        ts[i].extend(torch(p)?);
                    }
                }
                rs.push(rust(r_phase)?);
                if round % 2 == 0 {
                    for (i, p) in t_phases.iter().enumerate() {
                        ts[i].extend(torch(p)?);
                    }
                }
            }
            let ts = ts
                .into_iter()
                .map(|v| (!v.is_empty()).then(|| median_of(v)))
                .collect();
            Ok((median_of(rs), ts))
        };
    let (step, t) = both("train_step", &["train_step_literal", "train_step_single"])?;
    let (lit, single) = (t[0], t[1]);
    compare(
        "train_step_literal",
        step.seconds,
        lit.map(|p| p.seconds),
        "s",
    );
    compare(
        "train_step_single",
        step.seconds,
        single.map(|p| p.seconds),
        "s",
    );
    for (name, phase) in [
        ("infer_vit_s", "infer_vit_s"),
        ("infer_vit_b", "infer_vit_b"),
    ] {
        let (r, t) = both(phase, &[phase])?;
        let t = t[0];
        compare(name, r.seconds, t.map(|p| p.seconds), "s");
        println!(
            "  {name}: rust {:.1} img/s{}",
            BATCH as f64 / r.seconds,
            t.map(|t| format!(", torch {:.1} img/s", BATCH as f64 / t.seconds))
                .unwrap_or_default()
        );
        memory(name, &r, t);
    }
    // The whole evaluation, then its data pipeline alone (JPEG decode + preprocessing).
    for name in ["eval_pipeline", "eval_decode"] {
        let (r, t) = both(name, &[name])?;
        let t = t[0];
        compare(name, r.seconds, t.map(|p| p.seconds), "s");
        println!(
            "  {name}: rust {:.1} img/s{}",
            args.images as f64 / r.seconds,
            t.map(|t| format!(", torch {:.1} img/s", args.images as f64 / t.seconds))
                .unwrap_or_default()
        );
        memory(name, &r, t);
    }
    // `explain`'s per-image cost; the reference has no such phase, so a figure, not a ratio.
    let (r, _) = both("explain_vit_b", &[])?;
    compare("explain_vit_b", r.seconds, None, "s per image");
    memory("explain_vit_b", &r, None);
    memory("train_step (torch: single-call variant)", &step, single);
    compare(
        "peak_memory_train",
        step.peak_mib,
        single.map(|p| p.peak_mib),
        "MiB",
    );
    Ok(())
}
