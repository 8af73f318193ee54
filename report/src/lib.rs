//! What the `train`, `evaluate` and `experiments` binaries tell their user, in one place:
//! the version and the git revision baked in at build time, and progress that suits where
//! stderr goes. On a terminal that is an indicatif bar; under a batch system (Slurm, nohup,
//! CI, a pipe) bars are invisible, so the same progress becomes plain lines stamped with the
//! UTC time, at most one per [`line_interval`], plus every line the caller prints.
//!
//! A crate of its own because both binaries and the experiment driver need it and none of the
//! library crates below them (model, data, relevance) is about the command line.

use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use indicatif::{ProgressBar, ProgressStyle};

/// Short commit hash of the source tree the binary was built from (`-dirty` when tracked
/// files differed from it), or `unknown` when it was built outside a git checkout.
pub const REVISION: &str = env!("ROBUSTVIT_REVISION");

/// `--version` text: the crate version and the build revision, e.g. `0.1.0 (revision
/// 1a2b3c4d5e6f)`. Takes the caller's `CARGO_PKG_VERSION`, so each binary names its own.
pub fn version(pkg_version: &str) -> String {
    format!("{pkg_version} (revision {REVISION})")
}

/// Environment variable: seconds between two progress lines when stderr is not a terminal.
pub const INTERVAL_ENV: &str = "ROBUSTVIT_PROGRESS_SECS";

/// Seconds between two progress lines in a log: `$ROBUSTVIT_PROGRESS_SECS` (0: every update),
/// else 20 s, which keeps a multi-day log readable while showing that the job is alive.
pub fn line_interval() -> Duration {
    std::env::var(INTERVAL_ENV)
        .ok()
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s >= 0.0)
        .map_or(Duration::from_secs(20), Duration::from_secs_f64)
}

/// Whether stderr is a terminal (bars) or a file or pipe (timestamped lines).
pub fn stderr_is_terminal() -> bool {
    std::io::stderr().is_terminal()
}

/// `YYYY-MM-DDTHH:MM:SSZ` (UTC) of a time.
pub fn utc_timestamp(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (y, m, d) = civil_from_days((secs / 86_400) as i64);
    let s = secs % 86_400;
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        s / 3600,
        s / 60 % 60,
        s % 60
    )
}

/// Days since 1970-01-01 to a proleptic Gregorian (year, month, day), after H. Hinnant's
/// public-domain `civil_from_days` algorithm.
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// Prints a line to stderr, stamped with the UTC time when stderr is not a terminal (a log
/// line without a time is of little use a day later).
pub fn note(line: impl AsRef<str>) {
    if stderr_is_terminal() {
        eprintln!("{}", line.as_ref());
    } else {
        eprintln!("{} {}", utc_timestamp(SystemTime::now()), line.as_ref());
    }
}

/// `1h02m03s`, `4m05s` or `6s`.
pub fn duration(d: Duration) -> String {
    let s = d.as_secs();
    match (s / 3600, s / 60 % 60, s % 60) {
        (0, 0, s) => format!("{s}s"),
        (0, m, s) => format!("{m}m{s:02}s"),
        (h, m, s) => format!("{h}h{m:02}m{s:02}s"),
    }
}

enum Sink {
    /// `--quiet`: nothing.
    Hidden,
    Bar(ProgressBar),
    /// Stderr is a file or pipe: timestamped lines.
    Lines,
}

struct State {
    pos: u64,
    /// Position when this progress began (a resumed run starts past zero); rates and the ETA
    /// count only what this process did.
    first: u64,
    images: u64,
    message: String,
    last_line: Instant,
}

/// Progress of a loop of `total` units (steps, images): a bar on a terminal, timestamped
/// lines (`<time> <label>: <pos>/<total> <unit> (<pct>%), <message>, <rate> images/s, eta
/// <eta>`) otherwise. Methods take `&self`, like an indicatif bar.
pub struct Progress {
    sink: Sink,
    label: String,
    unit: &'static str,
    total: u64,
    start: Instant,
    every: Duration,
    state: Mutex<State>,
}

impl Progress {
    /// `unit` names what `total` counts (`steps`, `images`); `quiet` hides everything.
    pub fn new(label: impl Into<String>, total: u64, unit: &'static str, quiet: bool) -> Self {
        let sink = if quiet {
            Sink::Hidden
        } else if stderr_is_terminal() {
            Sink::Bar(Self::bar(total, unit))
        } else {
            Sink::Lines
        };
        Self::with_sink(sink, label.into(), total, unit, line_interval())
    }

    /// Timestamped lines whatever stderr is, every `every` at most (tests, and callers that
    /// know better than the terminal check).
    pub fn lines(
        label: impl Into<String>,
        total: u64,
        unit: &'static str,
        every: Duration,
    ) -> Self {
        Self::with_sink(Sink::Lines, label.into(), total, unit, every)
    }

    fn with_sink(
        sink: Sink,
        label: String,
        total: u64,
        unit: &'static str,
        every: Duration,
    ) -> Self {
        if let Sink::Bar(b) = &sink {
            b.set_message(label.clone());
        }
        let now = Instant::now();
        Self {
            sink,
            label,
            unit,
            total,
            start: now,
            every,
            state: Mutex::new(State {
                pos: 0,
                first: 0,
                images: 0,
                message: String::new(),
                last_line: now,
            }),
        }
    }

    fn bar(total: u64, unit: &str) -> ProgressBar {
        let b = ProgressBar::new(total);
        b.set_style(
            ProgressStyle::with_template(&format!(
                "{{prefix}}[{{bar:30}}] {{pos}}/{{len}} {unit}  {{msg}}  {{per_sec}}, eta {{eta}}"
            ))
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        b
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Where a resumed loop starts.
    pub fn set_position(&self, pos: u64) {
        let mut s = self.lock();
        s.pos = pos;
        s.first = pos;
        if let Sink::Bar(b) = &self.sink {
            b.set_position(pos);
            b.reset_eta();
        }
    }

    /// Text shown after the counts (the current loss, say).
    pub fn set_message(&self, msg: impl Into<String>) {
        let msg = msg.into();
        if let Sink::Bar(b) = &self.sink {
            b.set_message(format!("{}  {msg}", self.label));
        }
        self.lock().message = msg;
    }

    /// `n` units done, each of one image.
    pub fn inc(&self, n: u64) {
        self.inc_images(n, n);
    }

    /// `n` units done, holding `images` images (a training step is a batch).
    pub fn inc_images(&self, n: u64, images: u64) {
        let line = {
            let mut s = self.lock();
            s.pos += n;
            s.images += images;
            match self.sink {
                Sink::Lines if s.last_line.elapsed() >= self.every => {
                    s.last_line = Instant::now();
                    Some(self.status(&s))
                }
                _ => None,
            }
        };
        match (&self.sink, line) {
            (Sink::Bar(b), _) => b.inc(n),
            (_, Some(l)) => note_line(&l),
            _ => {}
        }
    }

    /// The current state as one line (without the time).
    fn status(&self, s: &State) -> String {
        let elapsed = self.start.elapsed();
        let done = s.pos.saturating_sub(s.first);
        let mut line = format!("{}: {}/{} {}", self.label, s.pos, self.total, self.unit);
        if self.total > 0 {
            line += &format!(" ({:.0}%)", 100.0 * s.pos as f64 / self.total as f64);
        }
        if !s.message.is_empty() {
            line += &format!(", {}", s.message);
        }
        let secs = elapsed.as_secs_f64();
        if secs > 0.0 && s.images > 0 {
            line += &format!(", {:.1} images/s", s.images as f64 / secs);
        }
        if done > 0 && s.pos < self.total {
            let left = secs / done as f64 * (self.total - s.pos) as f64;
            line += &format!(", eta {}", duration(Duration::from_secs_f64(left)));
        }
        line
    }

    /// Prints a line above the bar, or as a timestamped line in a log; nothing when quiet.
    pub fn println(&self, line: impl AsRef<str>) {
        match &self.sink {
            Sink::Hidden => {}
            Sink::Bar(b) => b.println(line.as_ref()),
            Sink::Lines => {
                note_line(line.as_ref());
                self.lock().last_line = Instant::now();
            }
        }
    }

    /// Removes the bar; in a log, a last line with the totals and the time taken.
    pub fn finish(&self) {
        match &self.sink {
            Sink::Hidden => {}
            Sink::Bar(b) => b.finish_and_clear(),
            Sink::Lines => {
                let s = self.lock();
                let line = format!("{} in {}", self.status(&s), duration(self.start.elapsed()));
                drop(s);
                note_line(&line);
            }
        }
    }
}

/// Every argument and subcommand of a command tree without a help text, named as a user
/// would type it (`experiments demo --device`); clap's own `--help` and `--version` are
/// left out. Each binary's tests assert that this is empty.
pub fn missing_help(cmd: &clap::Command) -> Vec<String> {
    fn walk(cmd: &clap::Command, path: &str, out: &mut Vec<String>) {
        for a in cmd.get_arguments() {
            let id = a.get_id().as_str();
            if id == "help" || id == "version" {
                continue;
            }
            let empty = |t: Option<&clap::builder::StyledStr>| {
                t.is_none_or(|t| t.to_string().trim().is_empty())
            };
            if empty(a.get_help()) && empty(a.get_long_help()) {
                let name = match (a.get_long(), a.get_short()) {
                    (Some(l), _) => format!("--{l}"),
                    (None, Some(s)) => format!("-{s}"),
                    (None, None) => format!("<{id}>"),
                };
                out.push(format!("{path} {name}"));
            }
        }
        for sub in cmd.get_subcommands() {
            if sub.get_name() == "help" {
                continue;
            }
            let p = format!("{path} {}", sub.get_name());
            let about = sub.get_about().or(sub.get_long_about());
            if about.is_none_or(|t| t.to_string().trim().is_empty()) {
                out.push(p.clone());
            }
            walk(sub, &p, out);
        }
    }
    let mut out = Vec::new();
    walk(cmd, cmd.get_name(), &mut out);
    out
}

/// POSIX single-quoting where needed, for the command lines printed to reproduce a run.
pub fn shell_quote(s: &str) -> String {
    let plain = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,@+%".contains(c));
    if plain {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

/// `prefix` followed by every argument, shell-quoted: the line a user pastes into a shell.
pub fn command_line(prefix: &str, args: &[String]) -> String {
    let mut s = String::from(prefix);
    for a in args {
        s.push(' ');
        s.push_str(&shell_quote(a));
    }
    s
}

fn note_line(line: &str) {
    eprintln!("{} {line}", utc_timestamp(SystemTime::now()));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_utc_iso_8601() {
        let at = |s: u64| utc_timestamp(UNIX_EPOCH + Duration::from_secs(s));
        assert_eq!(at(0), "1970-01-01T00:00:00Z");
        // 2000-02-29 (a leap day of a century divisible by 400) 23:59:59.
        assert_eq!(at(951_868_799), "2000-02-29T23:59:59Z");
        // 2026-12-02T03:04:05Z = 20789 days + 11045 s.
        assert_eq!(at(20_789 * 86_400 + 11_045), "2026-12-02T03:04:05Z");
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
    }

    #[test]
    fn durations_read_naturally() {
        assert_eq!(duration(Duration::from_secs(6)), "6s");
        assert_eq!(duration(Duration::from_secs(245)), "4m05s");
        assert_eq!(duration(Duration::from_secs(3723)), "1h02m03s");
    }

    #[test]
    fn status_lines_count_rate_and_eta_from_this_process() {
        let p = Progress::lines("train", 10, "steps", Duration::from_secs(3600));
        p.set_position(4);
        p.set_message("epoch 2, loss 0.5000");
        p.inc_images(2, 16);
        let s = p.status(&p.lock());
        assert!(
            s.starts_with("train: 6/10 steps (60%), epoch 2, loss 0.5000, "),
            "{s}"
        );
        assert!(s.contains(" images/s, eta "), "{s}");
        let done = Progress::lines("x", 3, "images", Duration::ZERO);
        done.inc(3);
        let s = done.status(&done.lock());
        assert!(s.starts_with("x: 3/3 images (100%)"), "{s}");
        assert!(!s.contains("eta"), "{s}");
    }

    #[test]
    fn the_revision_was_baked_in() {
        assert!(!REVISION.is_empty());
        assert!(version("1.2.3").starts_with("1.2.3 (revision "));
    }

    #[test]
    fn missing_help_names_each_undocumented_argument() {
        let cmd = clap::Command::new("tool")
            .version("1")
            .arg(
                clap::Arg::new("documented")
                    .long("documented")
                    .help("Says why."),
            )
            .arg(clap::Arg::new("bare").long("bare"))
            .subcommand(
                clap::Command::new("sub")
                    .about("A subcommand.")
                    .arg(clap::Arg::new("x").short('x'))
                    .arg(clap::Arg::new("file")),
            )
            .subcommand(clap::Command::new("silent"));
        assert_eq!(
            missing_help(&cmd),
            [
                "tool --bare",
                "tool sub -x",
                "tool sub <file>",
                "tool silent"
            ]
        );
    }

    #[test]
    fn the_interval_defaults_to_twenty_seconds() {
        if std::env::var_os(INTERVAL_ENV).is_none() {
            assert_eq!(line_interval(), Duration::from_secs(20));
        }
    }
}
