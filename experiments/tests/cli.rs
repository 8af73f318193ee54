//! The `experiments` binary as a user meets it: `--version` (also on each subcommand) names
//! the build's revision, and every flag of every subcommand has a help line.

use clap::CommandFactory;

#[path = "../../tests/support/revision.rs"]
mod revision;

#[test]
fn version_carries_the_build_revision_on_every_subcommand() {
    for args in [
        &["--version"][..],
        &["demo", "--version"],
        &["paper", "--version"],
    ] {
        let v = revision::version_output(env!("CARGO_BIN_EXE_experiments"), args);
        assert!(
            v.contains(&format!("{} (revision ", env!("CARGO_PKG_VERSION"))),
            "{args:?}: {v}"
        );
    }
}

#[test]
fn every_flag_of_every_subcommand_has_help() {
    let missing = report::missing_help(&experiments::cli::Cli::command());
    assert!(missing.is_empty(), "without a help line: {missing:?}");
    // The library types the subcommands run in-process.
    for cmd in [train::TrainArgs::command(), evaluate::EvalArgs::command()] {
        let missing = report::missing_help(&cmd);
        assert!(missing.is_empty(), "without a help line: {missing:?}");
    }
}
