//! `experiments paper` on the data crate's synthetic layouts of every dataset, with a tiny random
//! model standing in for the hub models: `--print-jobs` lists every (model, step) cell, and those
//! commands run in a shuffled order give the same tables as the in-process run.

mod common;

use std::path::Path;
use std::process::Command;

use clap::Parser;
use common::{assert_same_outputs, fixture, paper_args, parse_paper, s, split_words, MODELS};
use experiments::reproduction;
use rand::seq::SliceRandom;
use rand::SeedableRng;

/// (binary, arguments) of a printed job, which calls a built binary by absolute path.
fn parse_job(line: &str) -> (String, Vec<String>) {
    let w = split_words(line);
    let bin = Path::new(&w[0]);
    assert!(bin.is_absolute(), "not an absolute binary path: {line}");
    (
        bin.file_name().unwrap().to_str().unwrap().to_string(),
        w[1..].to_vec(),
    )
}

/// Runs a printed job in-process, as its binary would.
fn execute(line: &str) {
    let (package, args) = parse_job(line);
    match package.as_str() {
        "train" => {
            let a =
                train::TrainArgs::try_parse_from(std::iter::once("train".to_string()).chain(args))
                    .unwrap();
            train::execute(&a).unwrap();
        }
        "evaluate" => {
            let a = evaluate::EvalArgs::try_parse_from(
                std::iter::once("evaluate".to_string()).chain(args),
            )
            .unwrap();
            evaluate::run(&a).unwrap();
        }
        "experiments" => reproduction::run(&parse_paper(&args)).unwrap(),
        p => panic!("unexpected package {p}: {line}"),
    }
}

/// The value after `flag` in a job's arguments.
fn flag<'a>(args: &'a [String], flag: &str) -> Option<&'a str> {
    args.iter()
        .position(|a| a == flag)
        .map(|i| args[i + 1].as_str())
}

#[test]
fn printed_jobs_in_any_order_give_the_same_tables() {
    for m in MODELS {
        assert!(model::VARIANTS.iter().any(|v| v.name == m), "{m}");
    }
    let d = tempfile::tempdir().unwrap();
    let root = d.path().join("data");
    let out = d.path().join("out");
    let (weights, arch) = fixture(d.path(), &root);
    let args = paper_args(
        &root,
        &out,
        &weights,
        &arch,
        &["--epochs", "1", "--max-steps", "2"],
    );

    // (a) The job list, from the binary itself.
    let print = |args: &[String]| -> Vec<String> {
        let o = Command::new(env!("CARGO_BIN_EXE_experiments"))
            .args(args)
            .arg("--print-jobs")
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8(o.stdout)
            .unwrap()
            .lines()
            .map(String::from)
            .collect()
    };
    let printed = print(&args);
    let bin = Path::new(env!("CARGO_BIN_EXE_experiments"))
        .parent()
        .unwrap();
    assert_eq!(
        printed[0],
        format!(
            "# Build once, from the workspace root: cargo build --release -p train -p evaluate -p experiments; the lines below call {}/.",
            bin.display()
        )
    );
    let lines: Vec<String> = printed[1..].to_vec();
    let cells: Vec<(String, String, String)> = lines
        .iter()
        .map(|l| {
            let (package, a) = parse_job(l);
            let what = match package.as_str() {
                "train" => {
                    assert_eq!(a[0], "--resume-or-start");
                    assert_eq!(
                        flag(&a, "--imagenet"),
                        Some(s(&root.join("ImageNetS919/train-semi")).as_str())
                    );
                    assert_eq!(flag(&a, "--max-steps"), Some("2"));
                    s(Path::new(flag(&a, "--out").unwrap()))
                }
                "evaluate" => {
                    assert!(a.iter().any(|x| x == "--resume"), "{l}");
                    assert_eq!(flag(&a, "--suite"), Some("all"));
                    assert_eq!(flag(&a, "--limit"), Some("2"));
                    flag(&a, "--checkpoint").unwrap().to_string()
                }
                _ => a[..2].join(" "),
            };
            let model = flag(&a, "--model").or(flag(&a, "--models")).unwrap();
            (package, model.to_string(), what)
        })
        .collect();
    let run = |m: &str| s(&out.join("runs").join(m));
    let best = |m: &str| s(&out.join("runs").join(m).join("best.safetensors"));
    let t = |p: &str, m: &str, w: String| (p.to_string(), m.to_string(), w);
    let expected = vec![
        t("train", MODELS[0], run(MODELS[0])),
        t("train", MODELS[1], run(MODELS[1])),
        t("evaluate", MODELS[0], s(&weights)),
        t("evaluate", MODELS[1], s(&weights)),
        t("evaluate", MODELS[0], best(MODELS[0])),
        t("evaluate", MODELS[1], best(MODELS[1])),
        t("experiments", &MODELS.join(","), "paper --merge".into()),
    ];
    assert_eq!(cells, expected, "{lines:#?}");

    // (b) The whole reproduction in-process, then moved aside so that (c) writes the same paths.
    reproduction::run(&parse_paper(&args)).unwrap();
    let a_dir = d.path().join("a");
    std::fs::rename(&out, &a_dir).unwrap();

    // (c) The printed jobs in a shuffled order: trainings, evaluations, then the merge.
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
    let of =
        |bin: &str| -> Vec<&String> { lines.iter().filter(|l| parse_job(l).0 == bin).collect() };
    let (mut trains, mut evals) = (of("train"), of("evaluate"));
    trains.shuffle(&mut rng);
    evals.shuffle(&mut rng);
    assert_eq!(trains.len() + evals.len() + 1, lines.len());
    for l in trains.into_iter().chain(evals) {
        execute(l);
    }
    execute(lines.last().unwrap());

    // (d) The same weights and the same tables.
    assert_same_outputs(&a_dir, &out);
    let rob = common::without_run_columns(&out.join("robustness.csv"));
    for m in MODELS {
        for c in [s(&weights), best(m)] {
            assert!(
                rob.lines().any(|l| l.starts_with(&format!("{m},{c},"))),
                "no rows of {m} {c} in\n{rob}"
            );
        }
    }

    // Once everything is done every line may be run again: the same lines, a finished run
    // kept, finished datasets kept, and the merge leaves the tables as they are.
    let again = print(&args);
    assert_eq!(again, printed);
    let last = std::fs::read(out.join("runs").join(MODELS[0]).join("last.safetensors")).unwrap();
    let cell = out.join("cells").join(format!("{}-original", MODELS[0]));
    let tables = |dir: &Path| {
        ["robustness.csv", "segmentation.csv"].map(|f| std::fs::read(dir.join(f)).unwrap())
    };
    let before = tables(&cell);
    execute(&again[1]);
    execute(&again[3]);
    // Timings included: no dataset was evaluated again.
    assert!(
        before == tables(&cell),
        "a finished dataset was evaluated again"
    );
    execute(again.last().unwrap());
    assert_eq!(
        last,
        std::fs::read(out.join("runs").join(MODELS[0]).join("last.safetensors")).unwrap()
    );
    assert_same_outputs(&a_dir, &out);
}

#[test]
fn missing_training_data_says_where_it_was_looked_for() {
    let d = tempfile::tempdir().unwrap();
    let a = parse_paper(
        &[
            "paper",
            "--data-root",
            d.path().to_str().unwrap(),
            "--out",
            d.path().join("out").to_str().unwrap(),
        ]
        .map(String::from),
    );
    let e = format!("{:#}", reproduction::run(&a).unwrap_err());
    assert!(
        e.contains("imagenet/train") && e.contains("--imagenet"),
        "{e}"
    );
    // The merge of evaluations that never ran names them.
    let m = parse_paper(
        &[
            "paper",
            "--merge",
            "--models",
            "vit-b",
            "--out",
            d.path().join("out").to_str().unwrap(),
        ]
        .map(String::from),
    );
    let e = format!("{:#}", reproduction::run(&m).unwrap_err());
    assert!(
        e.contains("vit-base-original") && e.contains("--print-jobs"),
        "{e}"
    );
}

/// `--slurm` without a cluster: the scripts carry the asked resources, the GPU build and
/// device, the dependencies, and refuse a folder Slurm cannot name.
#[test]
fn slurm_scripts_carry_the_cluster_settings() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().join("jobs");
    let generate = |dir: &Path, extra: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_experiments"))
            .args(["paper", "--models", "vit-b,deit-s,ar-l", "--quiet"])
            .arg("--data-root")
            .arg(d.path().join("data"))
            .arg("--out")
            .arg(d.path().join("out"))
            .arg("--slurm")
            .arg(dir)
            .args(extra)
            .output()
            .unwrap()
    };
    let o = generate(
        &dir,
        &[
            "--partition",
            "gpu",
            "--account",
            "lab",
            "--gpus",
            "2",
            "--train-time",
            "3-00:00:00",
            "--mem",
            "90G",
            "--sbatch-extra=--constraint=a100",
        ],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let read = |f: &str| std::fs::read_to_string(dir.join(f)).unwrap();
    let (build, train, eval, merge, submit) = (
        read("build.sbatch"),
        read("train.sbatch"),
        read("eval.sbatch"),
        read("merge.sbatch"),
        read("submit.sh"),
    );
    for script in [&build, &train, &eval, &merge] {
        for line in [
            "#SBATCH --partition=gpu",
            "#SBATCH --account=lab",
            "#SBATCH --mem=90G",
            "#SBATCH --constraint=a100",
            "#SBATCH --requeue",
            "#SBATCH --open-mode=append",
        ] {
            assert!(script.contains(line), "{line} missing in\n{script}");
        }
    }
    assert!(build.contains("--features train/cuda,evaluate/cuda,experiments/cuda"));
    assert!(train.contains("#SBATCH --gres=gpu:2") && eval.contains("#SBATCH --gres=gpu:2"));
    assert!(!merge.contains("--gres"));
    assert!(train.contains("#SBATCH --time=3-00:00:00"));
    assert!(train.contains("#SBATCH --array=0-2") && eval.contains("#SBATCH --array=0-5"));
    let logs = dir.join("logs");
    assert!(train.contains(&format!("#SBATCH --output={}/train_%a.out", logs.display())));
    // One start-or-resume command per task, on the GPU, never through cargo.
    assert_eq!(
        train.matches("exec \"$TRAIN\" --resume-or-start ").count(),
        3
    );
    assert_eq!(train.matches("--device cuda").count(), 3);
    assert_eq!(eval.matches(" --resume").count(), 6);
    assert!(!train.contains("cargo") && !eval.contains("cargo") && !merge.contains("cargo"));
    // Finetuned evaluations 0..3 wait for the training task of the same index.
    assert!(submit
        .contains("finetuned=$(submit --array=0-2 --dependency=afterok:$build,aftercorr:$train"));
    assert!(submit.contains("original=$(submit --array=3-5 --dependency=afterok:$build "));
    assert!(submit.contains("--dependency=afterok:$finetuned:$original"));
    let tsv = read("tasks.tsv");
    assert!(
        tsv.contains("eval.sbatch\t0\tvit-base\tfinetuned\t"),
        "{tsv}"
    );
    assert!(
        tsv.contains("eval.sbatch\t5\taugreg-large\toriginal\t"),
        "{tsv}"
    );

    // CPU jobs: no GPU request, a CPU build.
    let cpu = d.path().join("cpu");
    assert!(generate(&cpu, &["--device", "cpu"]).status.success());
    let build = std::fs::read_to_string(cpu.join("build.sbatch")).unwrap();
    assert!(!build.contains("--gres") && !build.contains("--features"));

    // A folder Slurm's #SBATCH lines cannot name, and binaries that are not there.
    let o = generate(&d.path().join("with space"), &[]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("blanks"));
    let o = generate(&dir, &["--binaries", d.path().to_str().unwrap()]);
    assert!(!o.status.success());
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(e.contains("--binaries") && e.contains("cargo build"), "{e}");
}
