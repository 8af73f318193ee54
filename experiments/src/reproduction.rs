//! `experiments paper`: the whole reproduction in one command.
//!
//! For each of the paper's models: finetune it with its paper settings (`train`), evaluate its
//! original weights and its finetuned `best.safetensors` on every suite (`evaluate`), then merge
//! the evaluations into one set of tables (`paper_table.md`, the CSVs, the charts).
//!
//! Every step is a (model, step) cell that is also a self-contained shell command, so the same
//! work can be listed with `--print-jobs` or written as Slurm job arrays (`--slurm`, see
//! [`crate::slurm`]) and spread over a cluster. Every command starts or resumes by itself (train
//! `--resume-or-start`, evaluate `--resume`), so a killed job is simply run again. Each
//! evaluation writes into
//! its own folder, `<out>/cells/<model>-<original|finetuned>`, because `evaluate` merges its
//! CSVs by read-modify-rename: two evaluations running at the same time into one folder would
//! drop each other's rows. The last job merges the cells (idempotently, so re-running it or any
//! other job is harmless) and redraws the tables from the whole result files.

// The fields' doc comments are also the `--help` text, written for a terminal: `<wnid>`,
// `id[@revision]` are placeholders there, not HTML or intra-doc links.
#![allow(rustdoc::invalid_html_tags, rustdoc::broken_intra_doc_links)]

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};

use evaluate::results::{self, RobustnessRow, SegmentationRow};
use evaluate::{EvalArgs, ProtocolChoice};
use report::shell_quote;
use train::TrainArgs;

/// Long help of `experiments paper`.
pub const AFTER_HELP: &str = "\
Data under --data-root (conventional names; --imagenet / --imagenet-s point elsewhere):
  finetuning images   imagenet/train (<wnid>/*.JPEG), or else ImageNetS919/train-semi
  finetuning masks    ImageNetS919/train-semi-segmentation
  evaluation sets     as `evaluate --help` lists (imagenet/val, imagenet-a, ..., a missing one
                      is reported and skipped)

Outputs in --out: runs/<model>/ (the training runs), cells/<model>-original/ and
cells/<model>-finetuned/ (one evaluation each), and, merged from the cells, robustness.csv,
segmentation.csv, paper_table.md / paper_table.csv and chart_<model>_<protocol>.png.

A finished run is kept, an interrupted one resumed, and an interrupted evaluation keeps the
datasets it finished, so the command (or any job below) can simply be run again.

--slurm DIR writes Slurm batch scripts and DIR/submit.sh (see `bash DIR/submit.sh`): a build
job (cargo build, with --features cuda unless --device cpu; skipped with --binaries), a training
array (one task per model), an evaluation array (one task per model and weights; a finetuned
one waits for its model's training) and the merge. Every task is requeue-safe. DIR/tasks.tsv
maps array indices to models; logs go to DIR/logs/<array>_<index>.out.

--print-jobs prints the same work as one command per line for other schedulers: a first comment
line with the build command, then, in three waves:
  1. the train lines (one per model; independent of each other),
  2. the evaluate lines (independent of each other; a finetuned evaluation needs its model's
     training finished; the original-weights ones can run at once),
  3. the last line, `experiments paper --merge ...`.
The lines call the built binaries by absolute path (--binaries, default: the folder of this
binary). With --device auto (the default) jobs run with --device cuda, so that a job on a node
without a GPU fails instead of running on the CPU. Every line may be run again: runs resume,
evaluations keep their finished datasets, results are replaced, not duplicated.";

/// Options of `experiments paper`.
#[derive(Debug, Clone, clap::Args)]
pub struct PaperArgs {
    /// Folder holding the datasets under their conventional names (see below).
    #[arg(long, default_value = "data")]
    pub data_root: PathBuf,
    /// ImageNet train images, <wnid>/<name>.JPEG (default: DATA_ROOT/imagenet/train, or
    /// DATA_ROOT/ImageNetS919/train-semi when that is missing).
    #[arg(long)]
    pub imagenet: Option<PathBuf>,
    /// ImageNet-S919 train-semi-segmentation masks (default:
    /// DATA_ROOT/ImageNetS919/train-semi-segmentation).
    #[arg(long = "imagenet-s")]
    pub imagenet_s: Option<PathBuf>,
    /// Models, comma separated (default: all seven of the paper).
    #[arg(long, value_delimiter = ',')]
    pub models: Vec<String>,
    /// Output folder: runs/<model>, cells/, and the merged tables and charts.
    #[arg(long, default_value = "results")]
    pub out: PathBuf,
    /// Print one shell command per (model, step) instead of running (see below).
    #[arg(long)]
    pub print_jobs: bool,
    /// Write Slurm batch scripts and a submit.sh into this folder instead of running (see below).
    #[arg(long, value_name = "DIR", conflicts_with_all = ["print_jobs", "merge"])]
    pub slurm: Option<PathBuf>,
    /// Folder holding the built train, evaluate and experiments binaries that the jobs call
    /// (default for --print-jobs: the folder of this binary; for --slurm: a build job).
    #[arg(long, value_name = "DIR")]
    pub binaries: Option<PathBuf>,
    #[command(flatten)]
    pub cluster: crate::slurm::SlurmArgs,
    /// Only merge the finished evaluations into the tables of --out (the last printed job).
    #[arg(long, conflicts_with = "print_jobs")]
    pub merge: bool,
    /// paper, official, testbed, both or all (see `evaluate --help`).
    #[arg(long, value_enum, default_value_t = ProtocolChoice::All)]
    pub protocol: ProtocolChoice,
    /// Device of every job: cpu, cuda or auto (the GPU when built with --features cuda and one
    /// is present, else the CPU; each job's first lines say which).
    #[arg(long, default_value = "auto")]
    pub device: String,
    /// Training epochs (default: the paper's).
    #[arg(long)]
    pub epochs: Option<usize>,
    /// Stop training after N optimisation steps (quick trials).
    #[arg(long)]
    pub max_steps: Option<usize>,
    /// Finetune on the first N classes only (quick trials).
    #[arg(long)]
    pub limit_classes: Option<usize>,
    /// At most N evaluation images per dataset (quick trials).
    #[arg(long)]
    pub limit: Option<usize>,
    /// No progress bars or progress lines in the jobs.
    #[arg(long)]
    pub quiet: bool,
    /// Architecture (model::VitConfig JSON) of --weights, for weights without it in their header.
    #[arg(long, hide = true, requires = "weights")]
    pub arch: Option<PathBuf>,
    /// Initial weights of every model instead of the hub's (a stand-in model for tests).
    #[arg(long, hide = true)]
    pub weights: Option<String>,
}

/// What a job does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Step {
    Train,
    EvalOriginal,
    EvalFinetuned,
    Merge,
}

impl Step {
    /// Suffix of an evaluation's cell folder (only evaluations have one).
    fn cell(self) -> &'static str {
        match self {
            Step::EvalOriginal => "original",
            Step::EvalFinetuned => "finetuned",
            Step::Train | Step::Merge => "none",
        }
    }
}

/// What a job runs, as the typed arguments of its binary: a flag renamed in `train` or
/// `evaluate` fails to compile here, and the printed command line is derived from the same
/// value that an in-process run executes.
#[derive(Debug, Clone, PartialEq)]
pub enum Invocation {
    Train(Box<TrainArgs>),
    Evaluate(Box<EvalArgs>),
    /// `experiments paper --merge`: the cells of `models` into the tables of `out`.
    Merge {
        models: Vec<String>,
        out: PathBuf,
    },
}

impl Invocation {
    /// The binary that runs it.
    pub fn package(&self) -> &'static str {
        match self {
            Invocation::Train(_) => "train",
            Invocation::Evaluate(_) => "evaluate",
            Invocation::Merge { .. } => "experiments",
        }
    }

    /// Its arguments (after the binary). `to_args` of train and evaluate leaves defaults out; a
    /// job line spells out the device (and an evaluation its protocol), so that it means the
    /// same thing whatever the binaries' defaults become.
    pub fn to_args(&self) -> Vec<String> {
        fn spell_out(a: &mut Vec<String>, flag: &str, value: &str) {
            if !a.iter().any(|x| x == flag) {
                a.extend([flag.to_owned(), value.to_owned()]);
            }
        }
        match self {
            Invocation::Train(t) => {
                let mut a = t.to_args();
                spell_out(&mut a, "--device", &t.device);
                a
            }
            Invocation::Evaluate(e) => {
                let mut a = e.to_args();
                let p =
                    clap::ValueEnum::to_possible_value(&e.protocol).expect("no skipped variants");
                spell_out(&mut a, "--protocol", p.get_name());
                spell_out(&mut a, "--device", &e.device);
                a
            }
            Invocation::Merge { models, out } => vec![
                "paper".into(),
                "--merge".into(),
                "--models".into(),
                models.join(","),
                "--out".into(),
                s(out),
            ],
        }
    }
}

/// One (model, step) cell of the reproduction.
#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    pub step: Step,
    /// Canonical model name (empty for the merge).
    pub model: String,
    pub invocation: Invocation,
}

impl Job {
    /// The binary that runs it: `train`, `evaluate` or `experiments`.
    pub fn package(&self) -> &'static str {
        self.invocation.package()
    }

    /// Its arguments, as printed.
    pub fn args(&self) -> Vec<String> {
        self.invocation.to_args()
    }

    /// The shell command that runs this job with the binaries in `bin` (from any folder: every
    /// path in it is absolute).
    pub fn command(&self, bin: &Path) -> String {
        report::command_line(&shell_quote(&s(&bin.join(self.package()))), &self.args())
    }
}

/// The cargo command that builds the binaries the jobs call, with the GPU code unless the jobs
/// run on the CPU.
pub fn build_command(device: &str) -> String {
    let mut c = String::from("cargo build --release -p train -p evaluate -p experiments");
    if device != "cpu" {
        c.push_str(" --features train/cuda,evaluate/cuda,experiments/cuda");
    }
    c
}

/// The folder of the binaries the printed jobs call: --binaries, else this binary's own.
pub fn binaries_dir(args: &PaperArgs) -> Result<PathBuf> {
    match &args.binaries {
        Some(d) => absolute(d),
        None => {
            let exe = std::env::current_exe().context("locating the experiments binary")?;
            Ok(exe
                .parent()
                .context("the experiments binary has no folder")?
                .to_path_buf())
        }
    }
}

/// Checks that `dir` holds the three binaries the jobs call.
pub fn check_binaries(dir: &Path) -> Result<()> {
    for b in ["train", "evaluate", "experiments"] {
        if !dir.join(b).is_file() {
            bail!(
                "--binaries {}: no `{b}` there; build them with `{}` and give its target/release folder",
                dir.display(),
                build_command("cpu")
            );
        }
    }
    Ok(())
}

/// The device a cluster job is given: `auto` becomes `cuda`, so that a job on a node without a
/// usable GPU fails instead of running on the CPU for days.
fn job_device(args: &PaperArgs) -> String {
    match args.device.as_str() {
        "auto" => "cuda".into(),
        d => d.into(),
    }
}

fn s(p: &Path) -> String {
    p.display().to_string()
}

/// Job lines run from the workspace root, maybe on another node, not where they were printed,
/// so every path in them is absolute.
fn absolute(p: &Path) -> Result<PathBuf> {
    std::path::absolute(p).with_context(|| format!("making {} absolute", p.display()))
}

/// Canonical names of `--models` (all seven when empty), without repeats.
pub fn model_names(args: &PaperArgs) -> Result<Vec<String>> {
    if args.models.is_empty() {
        return Ok(model::VARIANTS.iter().map(|v| v.name.to_owned()).collect());
    }
    let mut names: Vec<String> = Vec::new();
    for m in &args.models {
        let n = model::variant(m)
            .map_err(|e| anyhow::anyhow!("--models: {e}"))?
            .name;
        if !names.iter().any(|x| x == n) {
            names.push(n.to_owned());
        }
    }
    Ok(names)
}

/// The training run folder of a model.
pub fn run_dir(out: &Path, model: &str) -> PathBuf {
    out.join("runs").join(model)
}

/// The evaluation folder of one (model, weights) cell.
pub fn cell_dir(out: &Path, model: &str, step: Step) -> PathBuf {
    out.join("cells").join(format!("{model}-{}", step.cell()))
}

/// The finetuning folders: the flags, else the conventional layout under the data root.
fn train_data(args: &PaperArgs) -> Result<(PathBuf, PathBuf)> {
    let root = &args.data_root;
    let images = match &args.imagenet {
        Some(p) => p.clone(),
        None => {
            let train = root.join("imagenet/train");
            let semi = root.join("ImageNetS919/train-semi");
            if !train.is_dir() && semi.is_dir() {
                semi
            } else {
                train
            }
        }
    };
    let masks = args
        .imagenet_s
        .clone()
        .unwrap_or_else(|| root.join("ImageNetS919/train-semi-segmentation"));
    Ok((absolute(&images)?, absolute(&masks)?))
}

/// The train job of `model` into `dir`: starts the run, or continues it when killed and run
/// again.
fn train_args(args: &PaperArgs, model: &str, dir: &Path) -> Result<TrainArgs> {
    let (images, masks) = train_data(args)?;
    Ok(TrainArgs {
        resume_or_start: true,
        model: Some(model.into()),
        weights: args.weights.as_deref().map(weights_spec).transpose()?,
        arch: args.arch.as_deref().map(absolute).transpose()?,
        imagenet: Some(images),
        imagenet_s: Some(masks),
        out: Some(dir.to_path_buf()),
        epochs: args.epochs,
        max_steps: args.max_steps,
        limit_classes: args.limit_classes,
        device: args.device.clone(),
        quiet: args.quiet,
        ..TrainArgs::default()
    })
}

/// A local weights file is made absolute; a hub id is left as it is.
fn weights_spec(w: &str) -> Result<String> {
    let p = Path::new(w);
    Ok(if p.exists() {
        s(&absolute(p)?)
    } else {
        w.into()
    })
}

/// The evaluation of one (model, weights) cell.
pub fn eval_args(args: &PaperArgs, model: &str, step: Step) -> Result<EvalArgs> {
    let out = absolute(&args.out)?;
    let checkpoint = match step {
        Step::EvalOriginal => match &args.weights {
            Some(w) => weights_spec(w)?,
            None => "pretrained".into(),
        },
        Step::EvalFinetuned => s(&run_dir(&out, model).join("best.safetensors")),
        _ => bail!("{step:?} is not an evaluation"),
    };
    Ok(EvalArgs {
        suite: vec!["all".into()],
        model: vec![model.into()],
        checkpoint: vec![checkpoint],
        protocol: args.protocol,
        data_root: absolute(&args.data_root)?,
        out: cell_dir(&out, model, step),
        limit: args.limit,
        device: args.device.clone(),
        quiet: args.quiet,
        resume: true,
        ..EvalArgs::default()
    })
}

/// Every cell, in the order a job array runs them: the trainings, the evaluations of the
/// original weights, those of the finetuned weights, the merge. Cluster jobs get
/// `job_device`'s device.
pub fn jobs(args: &PaperArgs) -> Result<Vec<Job>> {
    let mut args = args.clone();
    args.device = job_device(&args);
    cells(&args)
}

/// Every cell with the device as given.
fn cells(args: &PaperArgs) -> Result<Vec<Job>> {
    let models = model_names(args)?;
    let out = absolute(&args.out)?;
    let mut jobs = Vec::new();
    for m in &models {
        jobs.push(Job {
            step: Step::Train,
            model: m.clone(),
            invocation: Invocation::Train(Box::new(train_args(args, m, &run_dir(&out, m))?)),
        });
    }
    for step in [Step::EvalOriginal, Step::EvalFinetuned] {
        for m in &models {
            jobs.push(Job {
                step,
                model: m.clone(),
                invocation: Invocation::Evaluate(Box::new(eval_args(args, m, step)?)),
            });
        }
    }
    jobs.push(Job {
        step: Step::Merge,
        model: String::new(),
        invocation: Invocation::Merge {
            models: models.clone(),
            out: out.clone(),
        },
    });
    Ok(jobs)
}

/// Fails early, with what to do, when the finetuning data is not where it is looked for.
fn check_train_data(args: &PaperArgs) -> Result<()> {
    let (images, masks) = train_data(args)?;
    for (what, flag, p) in [
        ("ImageNet train images", "--imagenet", &images),
        (
            "ImageNet-S train-semi-segmentation masks",
            "--imagenet-s",
            &masks,
        ),
    ] {
        if !p.is_dir() {
            bail!(
                "{what} not found at {}: put them there (see `experiments paper --help`) or give {flag} DIR",
                p.display()
            );
        }
    }
    Ok(())
}

/// Merges the evaluation cells of `models` into `out`'s tables and redraws `paper_table.md`,
/// `paper_table.csv` and the charts from the whole tables (as `evaluate` does). Returns the
/// files written.
pub fn merge(out: &Path, models: &[String]) -> Result<Vec<PathBuf>> {
    let cells: Vec<PathBuf> = models
        .iter()
        .flat_map(|m| [Step::EvalOriginal, Step::EvalFinetuned].map(|st| cell_dir(out, m, st)))
        .collect();
    let missing: Vec<String> = cells
        .iter()
        .filter(|c| !c.join("robustness.csv").is_file() && !c.join("segmentation.csv").is_file())
        .map(|c| c.display().to_string())
        .collect();
    if !missing.is_empty() {
        bail!(
            "no evaluation results in {}: run their evaluate jobs first (`experiments paper --print-jobs` lists them)",
            missing.join(", ")
        );
    }
    let rob_path = out.join("robustness.csv");
    let seg_path = out.join("segmentation.csv");
    for c in &cells {
        let rob: Vec<RobustnessRow> = results::read_rows(&c.join("robustness.csv"))?;
        results::merge_rows(&rob_path, &rob)?;
        let seg: Vec<SegmentationRow> = results::read_rows(&c.join("segmentation.csv"))?;
        results::merge_rows(&seg_path, &seg)?;
    }
    let all_rob: Vec<RobustnessRow> = results::read_rows(&rob_path)?;
    let all_seg: Vec<SegmentationRow> = results::read_rows(&seg_path)?;
    let paper = evaluate::comparison::PaperResults::builtin();
    let mut files = vec![rob_path, seg_path];
    files.extend(evaluate::comparison::write_comparison(
        out,
        &all_rob,
        &all_seg,
        &paper,
        Some(&[]),
    )?);
    Ok(files)
}

/// Runs one job in-process (printing its command), as its binary would: a train job skips a
/// finished run and resumes an interrupted one, an evaluation keeps its finished datasets.
pub fn run_job(args: &PaperArgs, job: &Job) -> Result<()> {
    println!("$ {}", job.command(&binaries_dir(args)?));
    match &job.invocation {
        Invocation::Train(a) => {
            train::execute(a).with_context(|| format!("training {}", job.model))?;
        }
        Invocation::Evaluate(e) => {
            evaluate::run(e).with_context(|| format!("evaluating {}", job.model))?;
        }
        Invocation::Merge { models, out } => {
            for f in merge(out, models)? {
                println!("  {}", f.display());
            }
        }
    }
    Ok(())
}

/// `experiments paper`.
pub fn run(args: &PaperArgs) -> Result<()> {
    if args.merge {
        let out = absolute(&args.out)?;
        for f in merge(&out, &model_names(args)?)? {
            println!("{}", f.display());
        }
        return Ok(());
    }
    if let Some(dir) = &args.slurm {
        if let Err(e) = check_train_data(args) {
            eprintln!("warning: {e:#}");
        }
        return crate::slurm::write(dir, args, &jobs(args)?);
    }
    if args.print_jobs {
        if let Err(e) = check_train_data(args) {
            eprintln!("warning: {e:#}");
        }
        let bin = binaries_dir(args)?;
        println!(
            "# Build once, from the workspace root: {}; the lines below call {}/.",
            build_command(&job_device(args)),
            bin.display()
        );
        for j in &jobs(args)? {
            println!("{}", j.command(&bin));
        }
        return Ok(());
    }
    let jobs = cells(args)?;
    check_train_data(args)?;
    // Model by model, so that the first model's numbers exist before the last one trains.
    let mut order: Vec<&Job> = jobs.iter().collect();
    let rank = |j: &Job| {
        let m = jobs
            .iter()
            .position(|x| x.step == Step::Train && x.model == j.model)
            .unwrap_or(usize::MAX);
        (m, j.step)
    };
    order.sort_by_key(|j| rank(j));
    for j in order {
        run_job(args, j)?;
    }
    let out = absolute(&args.out)?;
    println!(
        "tables: {} (with robustness.csv, segmentation.csv and the charts in {})",
        out.join("paper_table.md").display(),
        out.display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Cmd};
    use clap::Parser;

    fn paper_args(extra: &[&str]) -> PaperArgs {
        let argv = ["experiments", "paper", "--data-root", "/d", "--out", "/o"];
        let cli = Cli::try_parse_from(argv.iter().chain(extra)).unwrap();
        let Cmd::Paper(a) = cli.cmd else {
            panic!("not the paper command")
        };
        *a
    }

    /// Each printed line, read back by its binary's own parser, is the value that an
    /// in-process run executes.
    #[test]
    fn printed_jobs_parse_back_to_their_invocations() {
        let cases = [
            paper_args(&[]),
            paper_args(&[
                "--models",
                "vit-b,deit-s",
                "--device",
                "cpu",
                "--protocol",
                "paper",
                "--epochs",
                "1",
                "--max-steps",
                "2",
                "--limit-classes",
                "3",
                "--limit",
                "4",
                "--quiet",
                "--weights",
                "org/stand-in",
                "--arch",
                "arch.json",
            ]),
        ];
        for args in cases {
            let jobs = jobs(&args).unwrap();
            assert_eq!(jobs.len(), 3 * model_names(&args).unwrap().len() + 1);
            for j in &jobs {
                let argv = std::iter::once(j.package().to_string()).chain(j.args());
                match &j.invocation {
                    Invocation::Train(t) => {
                        assert_eq!(TrainArgs::try_parse_from(argv).unwrap(), **t);
                        assert_eq!(j.args()[0], "--resume-or-start");
                        assert!(j.args().windows(2).any(|w| w == ["--device", &t.device]));
                    }
                    Invocation::Evaluate(e) => {
                        assert_eq!(EvalArgs::try_parse_from(argv).unwrap(), **e);
                        assert!(j.args().iter().any(|a| a == "--protocol"));
                        assert!(j.args().windows(2).any(|w| w == ["--device", &e.device]));
                    }
                    Invocation::Merge { models, out } => {
                        let cli = Cli::try_parse_from(
                            std::iter::once("experiments".to_string()).chain(j.args()),
                        )
                        .unwrap();
                        let Cmd::Paper(p) = cli.cmd else {
                            panic!("not the paper command")
                        };
                        assert!(p.merge);
                        assert_eq!((&p.models, &p.out), (models, out));
                    }
                }
            }
        }
    }
}
