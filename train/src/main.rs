use clap::Parser;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    model::keep_freed_memory();
    let args = train::TrainArgs::parse();
    let run = train::execute(&args)?;
    println!("run folder: {}", run.display());
    Ok(())
}
