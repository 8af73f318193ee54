//! The `train` binary as a user meets it: `--version` names the build's revision, every flag
//! has a help line, and with stderr going to a file or pipe (a batch system's log) the run
//! reports its device, weights and folder and leaves timestamped epoch lines.

use clap::CommandFactory;
use std::path::Path;
use std::process::Command;

mod common;
#[path = "../../tests/support/revision.rs"]
mod revision;

#[test]
fn version_carries_the_build_revision() {
    let v = revision::version_output(env!("CARGO_BIN_EXE_train"), &["--version"]);
    assert!(
        v.starts_with(&format!("train {} (revision ", env!("CARGO_PKG_VERSION"))),
        "{v}"
    );
}

#[test]
fn every_flag_has_help() {
    let missing = report::missing_help(&train::TrainArgs::command());
    assert!(missing.is_empty(), "without a help line: {missing:?}");
}

/// Whether `line` starts with `YYYY-MM-DDTHH:MM:SSZ `.
fn timestamped(line: &str) -> bool {
    let b = line.as_bytes();
    b.len() > 21
        && b[..20].iter().enumerate().all(|(i, c)| match i {
            4 | 7 => *c == b'-',
            10 => *c == b'T',
            13 | 16 => *c == b':',
            19 => *c == b'Z',
            _ => c.is_ascii_digit(),
        })
        && b[20] == b' '
}

#[test]
fn a_piped_run_logs_timestamped_lines() {
    let f = common::fixture();
    let (s, arch) = (&f, f.arch.clone());
    let out = f.root.join("run");
    let p = |p: &Path| p.to_str().unwrap().to_owned();
    let o = Command::new(env!("CARGO_BIN_EXE_train"))
        .args(["--arch", &p(&arch), "--imagenet", &p(&s.images)])
        .args(["--imagenet-s", &p(&s.masks), "--train-classes", "3"])
        .args(["--train-per-class", "3", "--val-per-class", "2"])
        .args(["--epochs", "3", "--batch-size", "4", "--lr", "2e-3"])
        .args(["--vis-images", "1", "--device", "auto", "--out", &p(&out)])
        .env_remove(report::INTERVAL_ENV)
        .output()
        .unwrap();
    let err = String::from_utf8(o.stderr).unwrap();
    assert!(o.status.success(), "{err}");
    let lines: Vec<&str> = err.lines().collect();
    assert!(lines.iter().all(|l| timestamped(l)), "{err}");
    let find = |needle: &str| {
        lines
            .iter()
            .find(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no line with `{needle}` in\n{err}"))
    };
    assert!(find(" train 0.").contains("(revision "), "{err}");
    let device = find(" device: ");
    if cfg!(feature = "cuda") {
        assert!(device.contains("--device auto"), "{device}");
    } else {
        assert!(
            device.ends_with(
                "device: cpu (--device auto: this build has no CUDA support (rebuild with \
                 `--features cuda` to use a GPU))"
            ),
            "{device}"
        );
    }
    assert!(
        find(" model: ").ends_with(&format!(
            "model: architecture of {}, random initialisation (seed 0)",
            p(&arch)
        )),
        "{err}"
    );
    find(&format!(" run folder: {}", p(&out)));
    // 9 training images, batches of 4: 3 steps an epoch.
    for (epoch, step) in [(0, 3), (1, 6), (2, 9)] {
        let l = find(&format!(" epoch {epoch} done: step {step}/9, loss "));
        assert!(l.contains(" images/s, lr "), "{l}");
        assert!(l.contains("val loss "), "{l}");
        let loss: f64 = l
            .split(", loss ")
            .nth(1)
            .unwrap()
            .split(' ')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        assert!(loss.is_finite() && loss > 0.0, "{l}");
    }
    // The last progress line, with totals and the time taken.
    assert!(
        find(" train: 9/9 steps (100%)").contains(" images/s"),
        "{err}"
    );
    for f in [
        "config.json",
        "metrics.csv",
        "best.safetensors",
        "last.safetensors",
    ] {
        find(&format!(" wrote {}", p(&out.join(f))));
    }
    assert_eq!(
        String::from_utf8(o.stdout).unwrap().trim(),
        format!("run folder: {}", p(&out))
    );
}
