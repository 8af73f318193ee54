//! The `experiments` binary as a user meets it: `--version` (also on each subcommand) names
//! the build's revision, and every flag of every subcommand has a help line.

use clap::CommandFactory;
use std::process::Command;

/// `git rev-parse --short=12 HEAD` of the source tree, `None` when git or the checkout is missing.
fn source_revision() -> Option<String> {
    let o = Command::new("git")
        .arg("-C")
        .arg(env!("CARGO_MANIFEST_DIR"))
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()?;
    o.status
        .success()
        .then(|| String::from_utf8_lossy(&o.stdout).trim().to_owned())
}

#[test]
fn version_carries_the_build_revision_on_every_subcommand() {
    let rev = source_revision();
    for args in [
        &["--version"][..],
        &["demo", "--version"],
        &["paper", "--version"],
    ] {
        let o = Command::new(env!("CARGO_BIN_EXE_experiments"))
            .args(args)
            .output()
            .unwrap();
        assert!(o.status.success(), "{args:?}");
        let v = String::from_utf8(o.stdout).unwrap();
        assert!(
            v.contains(&format!("{} (revision ", env!("CARGO_PKG_VERSION"))),
            "{args:?}: {v}"
        );
        match &rev {
            Some(rev) => assert!(v.contains(rev.as_str()), "{v} does not name HEAD {rev}"),
            None => assert!(v.contains("(revision unknown)"), "{v}"),
        }
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
