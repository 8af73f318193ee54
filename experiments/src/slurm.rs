//! `experiments paper --slurm DIR`: the paper's jobs as Slurm batch scripts.
//!
//! DIR gets one script per kind of job and a `submit.sh` that submits them with dependencies:
//!
//! - `build.sbatch` compiles the binaries once (no job ever runs cargo, so array tasks never
//!   fight over cargo's build lock) and records their absolute paths in `binaries.env`;
//!   `--binaries` writes that file at once and leaves the build job out;
//! - `train.sbatch`, an array with one task per model;
//! - `eval.sbatch`, an array with one task per (model, weights): indices `0..n` evaluate the
//!   finetuned weights and are submitted with `aftercorr` on the training array, so task `i`
//!   starts when model `i` is trained; indices `n..2n` evaluate the original weights and only
//!   wait for the build;
//! - `merge.sbatch`, which writes the tables and charts once every evaluation succeeded.
//!
//! Every task is requeue-safe (`--requeue`): train runs with `--resume-or-start`, evaluate
//! with `--resume` (one atomic table update per finished dataset), and the merge is idempotent,
//! so a task killed and started again ends as if it had never been interrupted. Logs are
//! appended to (`--open-mode=append`), so a requeued task's log shows each attempt.

use anyhow::{bail, Context, Result};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use report::shell_quote;

use crate::reproduction::{build_command, Job, PaperArgs, Step};

/// Cluster resources of `experiments paper --slurm`.
#[derive(Debug, Clone, clap::Args)]
#[command(next_help_heading = "Slurm (with --slurm)")]
pub struct SlurmArgs {
    /// Partition of every job (default: the cluster's).
    #[arg(long)]
    pub partition: Option<String>,
    /// Account charged for every job (default: yours).
    #[arg(long)]
    pub account: Option<String>,
    /// Time limit of each training task (Slurm's formats: MM, HH:MM:SS, D-HH:MM:SS). A task
    /// cut by the limit loses only its current epoch: resubmit it.
    #[arg(long, default_value = "2-00:00:00")]
    pub train_time: String,
    /// Time limit of each evaluation task.
    #[arg(long, default_value = "1-00:00:00")]
    pub eval_time: String,
    /// Time limit of the build job.
    #[arg(long, default_value = "2:00:00")]
    pub build_time: String,
    /// GPUs per training/evaluation task and for the build (`--gres=gpu:N`; left out with
    /// --device cpu).
    #[arg(long, default_value_t = 1)]
    pub gpus: usize,
    /// CPU cores per task (image decoding runs on them).
    #[arg(long, default_value_t = 8)]
    pub cpus_per_task: usize,
    /// Memory per task (Slurm's --mem: 64G, 8000M, ...).
    #[arg(long, default_value = "64G")]
    pub mem: String,
    /// An extra `#SBATCH` line for every job, e.g. --sbatch-extra=--constraint=a100 or
    /// --sbatch-extra=--qos=long (repeatable).
    #[arg(long, value_name = "LINE", allow_hyphen_values = true)]
    pub sbatch_extra: Vec<String>,
}

/// One job script of the set.
struct Script {
    /// File name, also the job name's suffix: `build`, `train`, `eval`, `merge`.
    name: &'static str,
    /// `#SBATCH --array` range (array jobs only).
    array: Option<usize>,
    time: String,
    gpu: bool,
    cpus: usize,
    /// Commands, by array index, or the single command.
    commands: Vec<String>,
}

/// The workspace the build job compiles: the one this binary was built from.
fn workspace_root() -> Result<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("the experiments crate has no parent folder")?
        .to_path_buf();
    if !root.join("Cargo.toml").is_file() {
        bail!(
            "the workspace this binary was built from ({}) is gone: build the binaries yourself and give --binaries DIR",
            root.display()
        );
    }
    Ok(root)
}

/// `#SBATCH` lines are read by sbatch, not by a shell: a path with blanks or `%` (Slurm's
/// log-name patterns) cannot be written in them.
fn check_plain(what: &str, p: &Path) -> Result<()> {
    let t = p.display().to_string();
    if t.chars().any(|c| c.is_whitespace() || c == '%') {
        bail!("{what} {t}: Slurm scripts cannot name a path with blanks or '%'; choose another");
    }
    Ok(())
}

fn header(s: &Script, dir: &Path, c: &SlurmArgs, device_cpu: bool) -> String {
    let mut h = String::from("#!/usr/bin/env bash\n");
    let mut line = |l: String| {
        h.push_str("#SBATCH ");
        h.push_str(&l);
        h.push('\n');
    };
    line(format!("--job-name=robustvit-{}", s.name));
    let log = match s.array {
        Some(n) => {
            line(format!("--array=0-{}", n - 1));
            format!("{}_%a.out", s.name)
        }
        None => format!("{}.out", s.name),
    };
    line(format!("--output={}", dir.join("logs").join(log).display()));
    line("--open-mode=append".into());
    line("--requeue".into());
    line(format!("--time={}", s.time));
    line("--ntasks=1".into());
    line(format!("--cpus-per-task={}", s.cpus));
    line(format!("--mem={}", c.mem));
    if s.gpu && !device_cpu && c.gpus > 0 {
        line(format!("--gres=gpu:{}", c.gpus));
    }
    if let Some(p) = &c.partition {
        line(format!("--partition={p}"));
    }
    if let Some(a) = &c.account {
        line(format!("--account={a}"));
    }
    for e in &c.sbatch_extra {
        line(e.trim().to_owned());
    }
    h
}

/// The body: run the command of this task (by exec, so that Slurm's signals reach it).
fn body(s: &Script, dir: &Path) -> String {
    let mut b = String::new();
    b.push_str("set -euo pipefail\n");
    if s.name != "build" {
        let _ = writeln!(
            b,
            "# The binaries' absolute paths (TRAIN, EVALUATE, EXPERIMENTS).\nsource {}",
            shell_quote(&dir.join("binaries.env").display().to_string())
        );
    }
    b.push_str(
        "echo \"== $(date -u +%FT%TZ) ${SLURM_JOB_NAME:-} job ${SLURM_JOB_ID:-} \
         task ${SLURM_ARRAY_TASK_ID:--} restart ${SLURM_RESTART_COUNT:-0} on $(hostname)\"\n",
    );
    match s.array {
        Some(_) => {
            b.push_str("case \"${SLURM_ARRAY_TASK_ID:?not an array task}\" in\n");
            for (i, c) in s.commands.iter().enumerate() {
                let _ = writeln!(b, "  {i}) exec {c} ;;");
            }
            b.push_str("  *) echo \"no task ${SLURM_ARRAY_TASK_ID} in $0\" >&2; exit 2 ;;\nesac\n");
        }
        None => {
            for c in &s.commands {
                b.push_str(c);
                b.push('\n');
            }
        }
    }
    b
}

/// A job's command line with the binary as a variable of `binaries.env`.
fn command(job: &Job) -> String {
    let var = match job.package() {
        "train" => "TRAIN",
        "evaluate" => "EVALUATE",
        _ => "EXPERIMENTS",
    };
    report::command_line(&format!("\"${var}\""), &job.args())
}

fn binaries_env(bin: &Path) -> String {
    let mut t =
        String::from("# Written by the build job (or --binaries): the binaries every job calls.\n");
    for (var, b) in [
        ("TRAIN", "train"),
        ("EVALUATE", "evaluate"),
        ("EXPERIMENTS", "experiments"),
    ] {
        let _ = writeln!(
            t,
            "{var}={}",
            shell_quote(&bin.join(b).display().to_string())
        );
    }
    t
}

/// Writes the scripts, `tasks.tsv` and `submit.sh` into `dir` and prints how to submit.
pub fn write(dir: &Path, args: &PaperArgs, jobs: &[Job]) -> Result<()> {
    let dir =
        std::path::absolute(dir).with_context(|| format!("making {} absolute", dir.display()))?;
    check_plain("--slurm", &dir)?;
    let c = &args.cluster;
    let cpu = args.device == "cpu";
    let of = |step: Step| -> Vec<&Job> { jobs.iter().filter(|j| j.step == step).collect() };
    let (trains, finetuned, original) = (
        of(Step::Train),
        of(Step::EvalFinetuned),
        of(Step::EvalOriginal),
    );
    let merge = of(Step::Merge);
    let n = trains.len();
    if n == 0 || finetuned.len() != n || original.len() != n || merge.len() != 1 {
        bail!("internal: unexpected job list ({} jobs)", jobs.len());
    }
    // Finetuned evaluation i must be array index i: `aftercorr` pairs equal indices.
    for (t, f) in trains.iter().zip(&finetuned) {
        if t.model != f.model {
            bail!("internal: training and evaluation orders differ");
        }
    }
    std::fs::create_dir_all(dir.join("logs"))
        .with_context(|| format!("creating {}", dir.join("logs").display()))?;

    let mut scripts = Vec::new();
    let build = match &args.binaries {
        Some(b) => {
            let b = std::path::absolute(b)?;
            crate::reproduction::check_binaries(&b)?;
            model::weights::write_atomic(&dir.join("binaries.env"), binaries_env(&b).as_bytes())?;
            false
        }
        None => {
            let root = workspace_root()?;
            let q = |p: &Path| shell_quote(&p.display().to_string());
            let target = format!("${{CARGO_TARGET_DIR:-{}}}", root.join("target").display());
            let env = dir.join("binaries.env");
            let cmds = vec![
                format!("cd {}", q(&root)),
                build_command(if cpu { "cpu" } else { "cuda" }),
                format!("bin=$(cd \"{target}\" && pwd)/release"),
                "for b in train evaluate experiments; do test -x \"$bin/$b\" || { echo \"$bin/$b was not built\" >&2; exit 1; }; done".into(),
                format!(
                    "printf 'TRAIN=%q\\nEVALUATE=%q\\nEXPERIMENTS=%q\\n' \"$bin/train\" \"$bin/evaluate\" \"$bin/experiments\" > {tmp}\nmv {tmp} {env}",
                    tmp = q(&env.with_extension("env.tmp")),
                    env = q(&env),
                ),
                format!("echo \"built: $(cat {})\"", q(&env)),
            ];
            scripts.push(Script {
                name: "build",
                array: None,
                time: c.build_time.clone(),
                // The CUDA kernels are compiled for the GPU the build node reports.
                gpu: true,
                cpus: c.cpus_per_task,
                commands: cmds,
            });
            true
        }
    };
    scripts.push(Script {
        name: "train",
        array: Some(n),
        time: c.train_time.clone(),
        gpu: true,
        cpus: c.cpus_per_task,
        commands: trains.iter().map(|j| command(j)).collect(),
    });
    scripts.push(Script {
        name: "eval",
        array: Some(2 * n),
        time: c.eval_time.clone(),
        gpu: true,
        cpus: c.cpus_per_task,
        commands: finetuned
            .iter()
            .chain(&original)
            .map(|j| command(j))
            .collect(),
    });
    scripts.push(Script {
        name: "merge",
        array: None,
        time: "1:00:00".into(),
        gpu: false,
        cpus: 1,
        commands: vec![format!("exec {}", command(merge[0]))],
    });

    let mut written = Vec::new();
    for s in &scripts {
        let text = format!("{}\n{}", header(s, &dir, c, cpu), body(s, &dir));
        let p = dir.join(format!("{}.sbatch", s.name));
        model::weights::write_atomic(&p, text.as_bytes())?;
        written.push(p);
    }

    let mut tsv = String::from("script\tindex\tmodel\tweights\tlog\n");
    let logs = dir.join("logs");
    for (i, j) in trains.iter().enumerate() {
        let _ = writeln!(
            tsv,
            "train.sbatch\t{i}\t{}\t-\t{}",
            j.model,
            logs.join(format!("train_{i}.out")).display()
        );
    }
    for (i, j) in finetuned.iter().chain(&original).enumerate() {
        let w = if j.step == Step::EvalFinetuned {
            "finetuned"
        } else {
            "original"
        };
        let _ = writeln!(
            tsv,
            "eval.sbatch\t{i}\t{}\t{w}\t{}",
            j.model,
            logs.join(format!("eval_{i}.out")).display()
        );
    }
    let _ = writeln!(
        tsv,
        "merge.sbatch\t-\t-\t-\t{}",
        logs.join("merge.out").display()
    );
    if build {
        let _ = writeln!(
            tsv,
            "build.sbatch\t-\t-\t-\t{}",
            logs.join("build.out").display()
        );
    }
    let tsv_path = dir.join("tasks.tsv");
    model::weights::write_atomic(&tsv_path, tsv.as_bytes())?;
    written.push(tsv_path);

    let submit = submit_script(&dir, n, build);
    let submit_path = dir.join("submit.sh");
    model::weights::write_atomic(&submit_path, submit.as_bytes())?;
    written.push(submit_path.clone());

    for p in &written {
        println!("{}", p.display());
    }
    println!(
        "{n} training task(s), {} evaluation task(s){}; submit with: bash {}",
        2 * n,
        if build { ", after one build job" } else { "" },
        submit_path.display()
    );
    Ok(())
}

/// `submit.sh`: every job with its dependencies, the job ids recorded in `jobs.env`.
fn submit_script(dir: &Path, n: usize, build: bool) -> String {
    let q = |p: &Path| shell_quote(&p.display().to_string());
    let mut t = String::new();
    t.push_str(
        "#!/usr/bin/env bash\n\
         # Submits the paper's jobs with their dependencies. Every task starts or resumes by\n\
         # itself, so after a failure: scancel what is left, then run this script again.\n\
         set -euo pipefail\n",
    );
    let _ = writeln!(t, "dir={}", q(dir));
    t.push_str("submit() { local id; id=$(sbatch --parsable \"$@\"); echo \"${id%%;*}\"; }\n");
    let after_build = if build {
        t.push_str("build=$(submit \"$dir/build.sbatch\")\n");
        "afterok:$build,"
    } else {
        t.push_str("build=\n");
        ""
    };
    let dep = |d: &str| -> String {
        let d = format!("{after_build}{d}");
        let d = d.trim_end_matches(',');
        if d.is_empty() {
            String::new()
        } else {
            format!("--dependency={d} ")
        }
    };
    let _ = writeln!(t, "train=$(submit {}\"$dir/train.sbatch\")", dep(""));
    let _ = writeln!(
        t,
        "finetuned=$(submit --array=0-{} {}\"$dir/eval.sbatch\")",
        n - 1,
        dep("aftercorr:$train")
    );
    let _ = writeln!(
        t,
        "original=$(submit --array={}-{} {}\"$dir/eval.sbatch\")",
        n,
        2 * n - 1,
        dep("")
    );
    t.push_str("merge=$(submit --dependency=afterok:$finetuned:$original \"$dir/merge.sbatch\")\n");
    t.push_str(
        "printf 'BUILD=%s\\nTRAIN=%s\\nEVAL_FINETUNED=%s\\nEVAL_ORIGINAL=%s\\nMERGE=%s\\n' \
         \"$build\" \"$train\" \"$finetuned\" \"$original\" \"$merge\" > \"$dir/jobs.env\"\n",
    );
    t.push_str(
        "echo \"submitted: ${build:+build $build, }train $train, evaluations $finetuned (finetuned) and $original (original), merge $merge\"\n\
         echo \"progress: squeue -u \\\"\\$USER\\\"; sacct -j $train,$finetuned,$original,$merge\"\n\
         echo \"logs:     $dir/logs/ (tasks.tsv maps array indices to models)\"\n\
         echo \"after a failure: scancel $train $finetuned $original $merge; bash $dir/submit.sh (finished runs and datasets are kept)\"\n",
    );
    t
}
