#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
fn main() -> anyhow::Result<()> {
    model::keep_freed_memory();
    let args = <evaluate::EvalArgs as clap::Parser>::parse();
    report::note(format!(
        "evaluate {}",
        report::version(env!("CARGO_PKG_VERSION"))
    ));
    evaluate::run(&args).map(|_| ())
}
