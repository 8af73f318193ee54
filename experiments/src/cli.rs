//! Command line of the `experiments` binary, in the library so that its tests can walk it.

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "experiments",
    about = "The paper's settings, the embedded benchmark, sweeps and benchmarks",
    version = report::version(env!("CARGO_PKG_VERSION")),
    propagate_version = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub cmd: Cmd,
}

#[derive(Subcommand)]
pub enum Cmd {
    /// The embedded benchmark: the paper's effect on a CPU with no downloads.
    Demo(crate::demo::DemoArgs),
    /// Speed and memory against the PyTorch reference in the same run.
    Bench(crate::bench::BenchArgs),
    /// The whole reproduction: finetune the paper's models, evaluate original and finetuned
    /// weights, regenerate paper_table.md and the charts (or print the jobs for a cluster).
    #[command(after_help = crate::reproduction::AFTER_HELP)]
    Paper(Box<crate::reproduction::PaperArgs>),
}
