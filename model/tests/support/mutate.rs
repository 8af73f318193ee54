//! A small deterministic mutator for the parser robustness tests: the same seed gives the same
//! cases on every machine, so a failure reproduces from the test name alone.
#![allow(dead_code)]

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;

/// xorshift64*: enough randomness for mutation, no dependency.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
}

const INTERESTING: [u64; 10] = [
    0,
    1,
    0x7F,
    0xFF,
    0x7FFF_FFFF,
    0x8000_0000,
    0xFFFF_FFFF,
    0x7FFF_FFFF_FFFF_FFFF,
    u64::MAX,
    1 << 40,
];

/// One to four mutations of `seeds[k]`: bit flips, byte insert/delete, truncation, splice with
/// another seed, interesting integers, chunk duplication, ASCII digit edits.
pub fn mutate(rng: &mut Rng, seeds: &[Vec<u8>]) -> Vec<u8> {
    let mut v = seeds[rng.below(seeds.len())].clone();
    for _ in 0..1 + rng.below(4) {
        let n = v.len();
        match rng.below(9) {
            0 if n > 0 => {
                let i = rng.below(n);
                v[i] ^= 1 << rng.below(8);
            }
            1 => {
                let i = rng.below(n + 1);
                v.insert(i, rng.next() as u8);
            }
            2 if n > 0 => {
                let i = rng.below(n);
                let len = 1 + rng.below((n - i).min(16));
                v.drain(i..i + len);
            }
            3 => v.truncate(rng.below(n + 1)),
            4 => {
                let other = &seeds[rng.below(seeds.len())];
                let cut = rng.below(n + 1);
                let from = rng.below(other.len() + 1);
                v.truncate(cut);
                v.extend_from_slice(&other[from..]);
            }
            5 if n > 0 => {
                let x = INTERESTING[rng.below(INTERESTING.len())].to_le_bytes();
                let w = [1, 2, 4, 8][rng.below(4)];
                let i = rng.below(n);
                for (k, b) in x.iter().take(w).enumerate() {
                    if i + k < n {
                        v[i + k] = *b;
                    }
                }
            }
            6 if n > 0 => {
                let i = rng.below(n);
                let len = 1 + rng.below((n - i).min(64));
                let chunk = v[i..i + len].to_vec();
                let at = rng.below(n + 1);
                v.splice(at..at, chunk);
            }
            7 if n > 0 => {
                // Digits matter in JSON and CSV: replace one by another or by a long number.
                if let Some(i) = (0..8)
                    .map(|_| rng.below(n))
                    .find(|&i| v[i].is_ascii_digit())
                {
                    let reps: [&[u8]; 5] = [b"0", b"-1", b"99999999999999999999", b"1e308", b"NaN"];
                    let r = reps[rng.below(reps.len())];
                    v.splice(i..i + 1, r.iter().copied());
                }
            }
            _ if n > 0 => {
                let i = rng.below(n);
                v[i] = rng.next() as u8;
            }
            _ => v.push(rng.next() as u8),
        }
    }
    v
}

/// Runs `parse` on `cases` mutations of the seeds and on every file of `regressions` (a
/// committed crash corpus); a panic fails with the case that caused it. Returns how many
/// inputs parsed without error.
pub fn never_panics(
    name: &str,
    seed: u64,
    cases: usize,
    seeds: &[Vec<u8>],
    regressions: &Path,
    parse: impl Fn(&[u8]) -> bool,
) -> usize {
    let mut inputs: Vec<(String, Vec<u8>)> = Vec::new();
    if let Ok(rd) = std::fs::read_dir(regressions) {
        let mut files: Vec<_> = rd.filter_map(|e| e.ok().map(|e| e.path())).collect();
        files.sort();
        for f in files {
            inputs.push((f.display().to_string(), std::fs::read(&f).unwrap()));
        }
    }
    for (i, s) in seeds.iter().enumerate() {
        inputs.push((format!("seed {i}"), s.clone()));
    }
    let mut rng = Rng::new(seed);
    let mut ok = 0;
    let t = std::time::Instant::now();
    for c in 0..cases + inputs.len() {
        let (label, bytes) = if c < inputs.len() {
            inputs[c].clone()
        } else {
            (
                format!("case {}", c - inputs.len()),
                mutate(&mut rng, seeds),
            )
        };
        match catch_unwind(AssertUnwindSafe(|| parse(&bytes))) {
            Ok(true) => ok += 1,
            Ok(false) => {}
            Err(_) => {
                let dump = std::env::temp_dir().join(format!("{name}-panic.bin"));
                let _ = std::fs::write(&dump, &bytes);
                panic!(
                    "{name}: {label} panicked (input saved to {})",
                    dump.display()
                );
            }
        }
    }
    eprintln!(
        "{name}: {} inputs ({cases} mutated), {ok} accepted, {:.2} s",
        cases + inputs.len(),
        t.elapsed().as_secs_f64()
    );
    // Write the seeds out for the nightly fuzzers' corpora when asked to.
    if let Some(dir) = std::env::var_os("ROBUSTVIT_WRITE_FUZZ_SEEDS") {
        let d = Path::new(&dir).join(name);
        std::fs::create_dir_all(&d).unwrap();
        for (i, s) in seeds.iter().enumerate() {
            std::fs::write(d.join(format!("seed-{i}")), s).unwrap();
        }
    }
    ok
}

/// `fuzz/regressions/<target>` of the repository.
pub fn regressions(target: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/regressions")
        .join(target)
}
