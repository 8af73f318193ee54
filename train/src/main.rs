use clap::Parser;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    model::keep_freed_memory();
    let args = train::TrainArgs::parse();
    report::note(format!(
        "train {}",
        report::version(env!("CARGO_PKG_VERSION"))
    ));
    let run = train::execute(&args)?;
    for f in train::cli::written_files(&run) {
        report::note(format!("wrote {}", f.display()));
    }
    println!("run folder: {}", run.display());
    Ok(())
}
