//! Shared by the binaries' CLI tests (`#[path]`-included): what `--version` must say.

use std::process::Command;

/// `git rev-parse --short=12 HEAD` of the source tree, `None` when git or the checkout is missing.
pub fn source_revision() -> Option<String> {
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

/// Runs `bin args`, asserts it succeeds and names the source tree's revision (or `unknown`
/// where there is no checkout), and returns what it printed.
///
/// The binary was built from this checkout, maybe a commit earlier if a test run follows a
/// commit without a rebuild; a fresh build always matches.
pub fn version_output(bin: &str, args: &[&str]) -> String {
    let o = Command::new(bin).args(args).output().unwrap();
    assert!(o.status.success(), "{args:?}");
    let v = String::from_utf8(o.stdout).unwrap();
    match source_revision() {
        Some(rev) => assert!(v.contains(&rev), "{v} does not name HEAD {rev}"),
        None => assert!(v.contains("(revision unknown)"), "{v}"),
    }
    v
}
