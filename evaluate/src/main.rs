#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
fn main() -> anyhow::Result<()> {
    evaluate::run(&<evaluate::EvalArgs as clap::Parser>::parse()).map(|_| ())
}
