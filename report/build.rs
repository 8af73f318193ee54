//! Bakes the git revision of the source tree into the crate (`ROBUSTVIT_REVISION`), so that a
//! binary copied elsewhere, or one built before a `git pull`, still reports the code it was
//! built from. Outside a git checkout (a source tarball, no git installed) it is `unknown`.

use std::path::{Path, PathBuf};
use std::process::Command;

fn git(root: &Path, args: &[&str]) -> Option<String> {
    let out = Command::new("git")
        .arg("-C")
        .arg(root)
        .args(args)
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// Asks cargo to run this script again when `path` changes; a path that does not exist is
/// left out (cargo would otherwise rerun the script on every build).
fn watch(path: &Path) {
    if path.exists() {
        println!("cargo:rerun-if-changed={}", path.display());
    }
}

/// A git-internal file (worktrees keep HEAD apart from the shared refs; `--git-path` knows).
fn git_path(root: &Path, name: &str) -> Option<PathBuf> {
    let p = PathBuf::from(git(root, &["rev-parse", "--git-path", name])?);
    Some(if p.is_relative() { root.join(p) } else { p })
}

fn main() {
    let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let root = manifest.parent().unwrap_or(&manifest).to_path_buf();
    println!("cargo:rerun-if-changed=build.rs");
    let revision = match git(&root, &["rev-parse", "--short=12", "HEAD"]) {
        Some(rev) if !rev.is_empty() => {
            // HEAD moves on checkout; the branch it points to (loose or packed) on commit and pull.
            for name in ["HEAD", "packed-refs"] {
                if let Some(p) = git_path(&root, name) {
                    watch(&p);
                }
            }
            if let Some(branch) = git(&root, &["symbolic-ref", "-q", "HEAD"]) {
                if let Some(p) = git_path(&root, &branch) {
                    match p.parent() {
                        // A branch that is only packed gets a loose file at its next commit.
                        Some(dir) if !p.exists() => watch(dir),
                        _ => watch(&p),
                    }
                }
            }
            // Editing tracked sources changes the `-dirty` marker.
            watch(&root.join("Cargo.toml"));
            watch(&root.join("Cargo.lock"));
            if let Ok(entries) = std::fs::read_dir(&root) {
                for e in entries.flatten() {
                    let dir = e.path();
                    if dir.join("Cargo.toml").is_file() {
                        for part in ["src", "build.rs", "Cargo.toml"] {
                            watch(&dir.join(part));
                        }
                    }
                }
            }
            let dirty = git(&root, &["status", "--porcelain", "--untracked-files=no"])
                .is_some_and(|s| !s.is_empty());
            if dirty {
                format!("{rev}-dirty")
            } else {
                rev
            }
        }
        _ => "unknown".to_owned(),
    };
    println!("cargo:rustc-env=ROBUSTVIT_REVISION={revision}");
}
