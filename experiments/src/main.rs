use clap::{Parser, Subcommand};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "experiments",
    about = "The paper's settings, the embedded benchmark, sweeps and benchmarks"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// The embedded benchmark: the paper's effect on a CPU with no downloads.
    Demo(experiments::demo::DemoArgs),
    /// Speed and memory against the PyTorch reference in the same run.
    Bench(experiments::bench::BenchArgs),
    /// The whole reproduction: finetune the paper's models, evaluate original and finetuned
    /// weights, regenerate paper_table.md and the charts (or print the jobs for a cluster).
    #[command(after_help = experiments::paper::AFTER_HELP)]
    Paper(Box<experiments::paper::PaperArgs>),
}

fn main() -> anyhow::Result<()> {
    model::keep_freed_memory();
    match Cli::parse().cmd {
        Cmd::Demo(a) => experiments::demo::run(&a),
        Cmd::Bench(a) => experiments::bench::run(&a),
        Cmd::Paper(a) => experiments::paper::run(&a),
    }
}
