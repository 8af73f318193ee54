#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
fn main() -> anyhow::Result<()> {
    model::keep_freed_memory();
    evaluate::run(&<evaluate::EvalArgs as clap::Parser>::parse()).map(|_| ())
}
