//! The `evaluate` and `explain` binaries as a user meets them: `--version` names the build's
//! revision, every flag has a help line, and `--device auto` says which device it uses and why.

use clap::CommandFactory;
use std::process::Command;

#[path = "../../tests/support/revision.rs"]
mod revision;

#[test]
fn version_carries_the_build_revision() {
    let v = revision::version_output(env!("CARGO_BIN_EXE_evaluate"), &["--version"]);
    assert!(
        v.starts_with(&format!(
            "evaluate {} (revision ",
            env!("CARGO_PKG_VERSION")
        )),
        "{v}"
    );
    // Result rows record the same revision.
    assert!(
        v.contains(&format!("(revision {})", evaluate::results::git_rev())),
        "{v}"
    );
}

#[test]
fn every_flag_has_help() {
    let missing = report::missing_help(&evaluate::EvalArgs::command());
    assert!(missing.is_empty(), "without a help line: {missing:?}");
    let missing = report::missing_help(&evaluate::explain::ExplainArgs::command());
    assert!(
        missing.is_empty(),
        "explain, without a help line: {missing:?}"
    );
}

#[test]
fn explain_version_carries_the_build_revision() {
    let v = revision::version_output(env!("CARGO_BIN_EXE_explain"), &["--version"]);
    assert!(
        v.starts_with(&format!("explain {} (revision ", env!("CARGO_PKG_VERSION"))),
        "{v}"
    );
}

#[test]
fn device_auto_says_what_it_uses() {
    // A check of nothing: fails after the start lines, without loading anything.
    let dir = tempfile::tempdir().unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_evaluate"))
        .args(["--model", "vit-base", "--device", "auto", "--check"])
        .arg("--data-root")
        .arg(dir.path())
        .env("HF_HUB_CACHE", dir.path().join("hub"))
        .env_remove("HF_HUB_OFFLINE")
        .output()
        .unwrap();
    let err = String::from_utf8(o.stderr).unwrap();
    assert!(!o.status.success(), "{err}");
    let line = |needle: &str| {
        err.lines()
            .find(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no line with `{needle}` in\n{err}"))
    };
    assert!(line("evaluate 0.").contains("(revision "), "{err}");
    if !cfg!(feature = "cuda") {
        assert!(
            line("device: ").ends_with(
                "device: cpu (--device auto: this build has no CUDA support (rebuild with \
                 `--features cuda` to use a GPU))"
            ),
            "{err}"
        );
    }
    // --check never downloads, and says so without blaming HF_HUB_OFFLINE, which is unset.
    assert!(err.contains("this run only looks in the cache"), "{err}");
    assert!(!err.contains("HF_HUB_OFFLINE is set"), "{err}");
    assert!(err.contains("evaluate --checkpoint"), "{err}");
}
