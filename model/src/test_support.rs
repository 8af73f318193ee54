//! Helpers of the tests of every crate: the golden fixture set, the device golden tests run
//! on, and numerical comparisons that fail on NaN. Built only for tests (`cfg(test)`) and for
//! crates that enable the `test-support` feature in their dev-dependencies, so that no binary
//! ships them.

use std::path::PathBuf;

use crate::{load, HubOptions, LoadedModel, Result};

/// Files every golden fixture set holds.
pub const FIXTURE_FILES: [&str; 7] = [
    "config.json",
    "meta.json",
    "model.safetensors",
    "inputs.safetensors",
    "outputs.safetensors",
    "grads.safetensors",
    "adamw.safetensors",
];

/// The folder of a golden fixture set: `$ROBUSTVIT_FIXTURES` when set, else the set
/// `tests/fixtures/public` shipped in the repository. Golden tests read it so that another set
/// of the same layout can be checked without recompiling. A set variable that points at a
/// missing or incomplete folder panics (a silent fallback would check the wrong set); the set
/// that runs is printed.
pub fn fixture_dir() -> PathBuf {
    let dir = resolve_fixture_dir(
        "ROBUSTVIT_FIXTURES",
        &FIXTURE_FILES,
        "tests/fixtures/public",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    println!("golden fixture set: {}", dir.display());
    dir
}

/// The fixture folder named by the environment variable `var`, or `default` (relative to the
/// repository root) when it is unset. Errors when the variable is set but the folder lacks one
/// of `required`.
pub fn resolve_fixture_dir(
    var: &str,
    required: &[&str],
    default: &str,
) -> std::result::Result<PathBuf, String> {
    match std::env::var_os(var) {
        Some(d) => {
            let dir = PathBuf::from(d);
            if !dir.is_dir() {
                return Err(format!(
                    "{var}={} is not a folder; unset it to use {default}, or point it at a fixture set",
                    dir.display()
                ));
            }
            if let Some(f) = required.iter().find(|f| !dir.join(f).exists()) {
                return Err(format!(
                    "{var}={}: the set lacks {f}; complete it, or unset {var} to use {default}",
                    dir.display()
                ));
            }
            Ok(dir)
        }
        None => Ok(PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("..")
            .join(default)),
    }
}

/// The device golden tests run on: `ROBUSTVIT_TEST_DEVICE=cuda` (with the `cuda` feature) checks
/// the GPU path against the same fixtures; anything else, or no GPU, is the CPU.
pub fn test_device() -> candle_core::Device {
    match std::env::var("ROBUSTVIT_TEST_DEVICE").as_deref() {
        Ok("cuda") => {
            candle_core::Device::new_cuda(0).expect("ROBUSTVIT_TEST_DEVICE=cuda but no CUDA device")
        }
        _ => candle_core::Device::Cpu,
    }
}

/// max |t| over all elements, as f32 (any float dtype), for numerical checks. NaN when any
/// element is NaN (a plain `f32::max` fold would skip it), +inf when any is infinite, so that
/// `max_abs(..) <= tol` fails on them.
pub fn max_abs(t: &candle_core::Tensor) -> candle_core::Result<f32> {
    let v: Vec<f32> = t
        .flatten_all()?
        .to_dtype(candle_core::DType::F32)?
        .to_vec1()?;
    let mut m = 0f32;
    for x in v {
        if x.is_nan() {
            return Ok(f32::NAN);
        }
        m = m.max(x.abs());
    }
    Ok(m)
}

/// max |a − b| over all elements, as f32, for numerical checks; NaN-propagating like
/// [`max_abs`] (an infinity in either operand gives NaN or +inf).
pub fn max_abs_diff(a: &candle_core::Tensor, b: &candle_core::Tensor) -> candle_core::Result<f32> {
    max_abs(&(a - b)?)
}

/// How far a result lies from its reference, as measured by [`compare`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Deviation {
    pub max_abs_diff: f64,
    pub mean_abs_diff: f64,
    /// max |reference|, the scale of a relative tolerance.
    pub max_abs_ref: f64,
    /// Index of the largest difference.
    pub worst: usize,
    /// Elements that agree exactly.
    pub equal: usize,
    pub len: usize,
}

impl Deviation {
    /// Fraction of elements that agree exactly (1 for empty inputs).
    pub fn exact_fraction(&self) -> f64 {
        if self.len == 0 {
            1.0
        } else {
            self.equal as f64 / self.len as f64
        }
    }

    /// `max|a − b| ≤ atol + rtol · max|ref|`.
    pub fn within(&self, atol: f64, rtol: f64) -> bool {
        self.max_abs_diff <= atol + rtol * self.max_abs_ref
    }
}

/// Compares `got` with its reference `want` element by element. A length mismatch, or a NaN or
/// infinity in either operand, is an error naming `name` and the first offending index:
/// `f32::max(m, NaN)` returns `m`, so a hand-written max-difference fold passes on NaN.
pub fn compare<T: Copy + Into<f64>>(
    name: &str,
    got: &[T],
    want: &[T],
) -> std::result::Result<Deviation, String> {
    if got.len() != want.len() {
        return Err(format!(
            "{name}: {} elements, the reference has {}",
            got.len(),
            want.len()
        ));
    }
    let mut d = Deviation {
        max_abs_diff: 0.0,
        mean_abs_diff: 0.0,
        max_abs_ref: 0.0,
        worst: 0,
        equal: 0,
        len: got.len(),
    };
    let mut sum = 0f64;
    for (i, (&a, &b)) in got.iter().zip(want).enumerate() {
        let (a, b): (f64, f64) = (a.into(), b.into());
        if !a.is_finite() {
            return Err(format!("{name}[{i}]: result is {a} (reference {b})"));
        }
        if !b.is_finite() {
            return Err(format!("{name}[{i}]: reference is {b} (result {a})"));
        }
        let e = (a - b).abs();
        if e > d.max_abs_diff {
            d.max_abs_diff = e;
            d.worst = i;
        }
        d.equal += usize::from(e == 0.0);
        d.max_abs_ref = d.max_abs_ref.max(b.abs());
        sum += e;
    }
    d.mean_abs_diff = if d.len == 0 { 0.0 } else { sum / d.len as f64 };
    Ok(d)
}

/// [`compare`] for two tensors of any float dtype; their shapes must be equal.
pub fn compare_tensors(
    name: &str,
    got: &candle_core::Tensor,
    want: &candle_core::Tensor,
) -> std::result::Result<Deviation, String> {
    if got.dims() != want.dims() {
        return Err(format!(
            "{name}: shape {:?}, the reference has {:?}",
            got.dims(),
            want.dims()
        ));
    }
    let flat = |t: &candle_core::Tensor| -> std::result::Result<Vec<f64>, String> {
        t.flatten_all()
            .and_then(|t| t.to_dtype(candle_core::DType::F64))
            .and_then(|t| t.to_vec1())
            .map_err(|e| format!("{name}: {e}"))
    };
    compare(name, &flat(got)?, &flat(want)?)
}

/// [`compare_tensors`] against the tolerance `|a − b| ≤ atol + rtol · max|ref|`; the error
/// names the tensor, the worst index and both values' scale.
pub fn check_close(
    name: &str,
    got: &candle_core::Tensor,
    want: &candle_core::Tensor,
    atol: f64,
    rtol: f64,
) -> std::result::Result<Deviation, String> {
    let d = compare_tensors(name, got, want)?;
    if d.within(atol, rtol) {
        Ok(d)
    } else {
        Err(format!(
            "{name}: max abs diff {:.3e} at index {} exceeds {atol:e} + {rtol:e} * max|ref| {:.3e}",
            d.max_abs_diff, d.worst, d.max_abs_ref
        ))
    }
}

/// Builds the model described by a fixture set's `config.json` + `model.safetensors`.
pub fn load_fixture_model(
    dir: &std::path::Path,
    device: &candle_core::Device,
) -> Result<LoadedModel> {
    load(
        None,
        Some(dir.to_str().unwrap_or_default()),
        &HubOptions::from_env(),
        device,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Tensor};

    #[test]
    fn comparison_fails_on_nan_inf_and_length() {
        let want = [1.0f32, 2.0, 3.0];
        let d = compare("t", &[1.0f32, 2.5, 3.0], &want).unwrap();
        assert_eq!((d.max_abs_diff, d.worst, d.equal, d.len), (0.5, 1, 2, 3));
        assert_eq!(d.max_abs_ref, 3.0);
        assert!((d.exact_fraction() - 2.0 / 3.0).abs() < 1e-12);
        assert!(d.within(0.5, 0.0) && !d.within(0.1, 0.1));
        // A NaN anywhere fails, whichever side it is on; f32::max would have ignored it.
        assert_eq!(1f32.max(f32::NAN), 1.0);
        let e = compare("logits", &[1.0, f32::NAN, 3.0], &want).unwrap_err();
        assert!(e.contains("logits[1]") && e.contains("NaN"), "{e}");
        let e = compare("attn.0", &want, &[1.0, 2.0, f32::NAN]).unwrap_err();
        assert!(e.contains("attn.0[2]") && e.contains("reference"), "{e}");
        let e = compare("x", &[f32::INFINITY, 2.0, 3.0], &want).unwrap_err();
        assert!(e.contains("x[0]") && e.contains("inf"), "{e}");
        let e = compare("x", &[1.0f32, 2.0], &want).unwrap_err();
        assert!(e.contains("2 elements") && e.contains("3"), "{e}");
    }

    #[test]
    fn tensor_checks_fail_on_nan_and_shape() {
        let dev = Device::Cpu;
        let want = Tensor::new(&[[1.0f32, 2.0], [3.0, 4.0]], &dev).unwrap();
        let nan = Tensor::new(&[[1.0f32, 2.0], [f32::NAN, 4.0]], &dev).unwrap();
        let e = check_close("logits", &nan, &want, 1e3, 1e3).unwrap_err();
        assert!(e.contains("logits[2]"), "{e}");
        // The max-difference helpers propagate NaN, so `<= tol` fails.
        assert!(max_abs_diff(&nan, &want).unwrap().is_nan());
        assert!(max_abs(&nan).unwrap().is_nan());
        // A check written as `diff <= tol` therefore fails.
        let diff = max_abs_diff(&nan, &want).unwrap();
        assert_eq!(diff.partial_cmp(&1e3), None);
        let flat = want.flatten_all().unwrap();
        let e = check_close("w", &flat, &want, 0.0, 0.0).unwrap_err();
        assert!(e.contains("shape"), "{e}");
        let near = (&want + 1e-3).unwrap();
        assert!(check_close("w", &near, &want, 0.0, 1e-3).is_ok());
        let e = check_close("w", &near, &want, 0.0, 1e-4).unwrap_err();
        assert!(e.contains("w: max abs diff"), "{e}");
    }

    #[test]
    fn a_set_fixture_variable_must_name_a_complete_set() {
        let var = "ROBUSTVIT_FIXTURES_RESOLVE_TEST";
        std::env::remove_var(var);
        let d = resolve_fixture_dir(var, &["a.json"], "tests/fixtures/public").unwrap();
        assert!(d.ends_with("tests/fixtures/public"));
        let tmp = tempfile::tempdir().unwrap();
        std::env::set_var(var, tmp.path().join("missing"));
        let e = resolve_fixture_dir(var, &["a.json"], "x").unwrap_err();
        assert!(e.contains("not a folder"), "{e}");
        std::env::set_var(var, tmp.path());
        let e = resolve_fixture_dir(var, &["a.json"], "x").unwrap_err();
        assert!(e.contains("lacks a.json"), "{e}");
        std::fs::write(tmp.path().join("a.json"), "{}").unwrap();
        assert_eq!(
            resolve_fixture_dir(var, &["a.json"], "x").unwrap(),
            tmp.path()
        );
        std::env::remove_var(var);
    }
}
