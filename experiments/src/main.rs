use clap::Parser;
use experiments::cli::{Cli, Cmd};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    model::keep_freed_memory();
    let cli = Cli::parse();
    report::note(format!(
        "experiments {}",
        report::version(env!("CARGO_PKG_VERSION"))
    ));
    match cli.cmd {
        Cmd::Demo(a) => experiments::demo::run(&a),
        Cmd::Bench(a) => experiments::bench::run(&a),
        Cmd::Paper(a) => experiments::reproduction::run(&a),
    }
}
