#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
fn main() -> anyhow::Result<()> {
    model::keep_freed_memory();
    let args = <evaluate::explain::ExplainArgs as clap::Parser>::parse();
    report::note(format!(
        "explain {}",
        report::version(env!("CARGO_PKG_VERSION"))
    ));
    let summary = evaluate::explain::run(&args)?;
    report::note(format!(
        "wrote {} file(s) in {}",
        summary.written.len(),
        args.out.display()
    ));
    Ok(())
}
