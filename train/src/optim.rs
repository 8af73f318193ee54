//! PyTorch's `torch.optim.AdamW` (decoupled weight decay, bias correction), with moments in
//! f32 and a state that can be saved and restored; candle's own AdamW keeps its moments
//! private, so a run could not resume where it stopped.
//!
//! Per parameter `p` with gradient `g`, at step `t` (from 1):
//! ```text
//! p ← p · (1 − lr·wd)
//! m ← β₁ m + (1 − β₁) g
//! v ← β₂ v + (1 − β₂) g²
//! p ← p − lr / (1 − β₁ᵗ) · m / (√v / √(1 − β₂ᵗ) + ε)
//! ```
//! Weight decay applies to every parameter, as in the reference (`AdamW(model.parameters())`).
//!
//! The learning-rate schedules that drive it are in [`crate::trainer`] ([`crate::trainer::learning_rate`]);
//! the paper's step decay is [`step_decay_lr`] here.

use candle_core::{DType, Device, Shape, Tensor};
use model::Params;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Mutex;

/// What can go wrong in an optimizer step or with a saved state.
#[derive(Debug, thiserror::Error)]
pub enum OptimError {
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    #[error("no gradient for `{0}`: every parameter needs one")]
    MissingGradient(String),
    #[error("invalid argument: {0}")]
    Invalid(String),
    #[error("optimizer state {path}: {msg}")]
    State {
        path: std::path::PathBuf,
        msg: String,
    },
}

pub type Result<T, E = OptimError> = std::result::Result<T, E>;

/// Hyper-parameters. `Default`: PyTorch's defaults except the reference's weight decay 1e-4.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct AdamWConfig {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        Self {
            lr: 1e-3,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 1e-4,
        }
    }
}

/// The step schedule: the learning rate of epoch `epoch` (from 0) is
/// `base · decay^⌊epoch / every⌋`, set at the start of the epoch. The reference decays by
/// 0.85 every 2 epochs (the defaults of `--lr-decay` and `--lr-decay-every`).
pub fn step_decay_lr(base: f64, decay: f64, every: usize, epoch: usize) -> f64 {
    base * decay.powi((epoch / every.max(1)) as i32)
}

/// Update constants: lr, β₁, β₂, ε, weight decay, lr / (1 − β₁ᵗ), √(1 − β₂ᵗ).
type Consts = [f64; 7];

/// One parameter's update in a single pass on the CPU, in place: the parameter's own storage
/// (through candle's in-place op) and the moments' buffers, no copies (the tensor-op version
/// below makes about a dozen passes over every parameter). Same arithmetic, in f32 with f64
/// constants rounded once, as the tensor ops do.
struct InPlaceUpdate<'a> {
    m: Mutex<&'a mut [f32]>,
    v: Mutex<&'a mut [f32]>,
    c: Consts,
}

impl candle_core::InplaceOp2 for InPlaceUpdate<'_> {
    fn name(&self) -> &'static str {
        "adamw-update"
    }
    fn cpu_fwd(
        &self,
        sp: &mut candle_core::CpuStorage,
        lp: &candle_core::Layout,
        sg: &candle_core::CpuStorage,
        lg: &candle_core::Layout,
    ) -> candle_core::Result<()> {
        use rayon::prelude::*;
        const CHUNK: usize = 8192;
        let [lr, beta1, beta2, eps, wd, step_size, bc2_sqrt] = self.c;
        let n = lp.shape().elem_count();
        if !lp.is_contiguous() || !lg.is_contiguous() || lg.shape().elem_count() != n {
            candle_core::bail!("adamw: parameter and gradient must be contiguous and alike");
        }
        let candle_core::CpuStorage::F32(pv) = sp else {
            candle_core::bail!("adamw: the in-place update takes f32 parameters");
        };
        let pv = &mut pv[lp.start_offset()..][..n];
        let gv = &sg.as_slice::<f32>()?[lg.start_offset()..][..n];
        let poisoned = |_| candle_core::Error::Msg("adamw: poisoned moments".into());
        let mut m = self.m.lock().map_err(poisoned)?;
        let mut v = self.v.lock().map_err(poisoned)?;
        if m.len() != n || v.len() != n {
            candle_core::bail!("adamw: moments of {} values for {n} parameters", m.len());
        }
        let (b1, b2) = (beta1 as f32, beta2 as f32);
        let (ob1, ob2) = ((1.0 - beta1) as f32, (1.0 - beta2) as f32);
        let (decay, ss, bc2, e) = (
            (1.0 - lr * wd) as f32,
            step_size as f32,
            bc2_sqrt as f32,
            eps as f32,
        );
        pv.par_chunks_mut(CHUNK)
            .zip(gv.par_chunks(CHUNK))
            .zip(m.par_chunks_mut(CHUNK).zip(v.par_chunks_mut(CHUNK)))
            .for_each(|((p, g), (m, v))| {
                for j in 0..p.len() {
                    let gj = g[j];
                    m[j] = m[j] * b1 + gj * ob1;
                    v[j] = v[j] * b2 + gj * gj * ob2;
                    let denom = v[j].sqrt() / bc2 + e;
                    p[j] = p[j] * decay - (m[j] / denom) * ss;
                }
            });
        Ok(())
    }
}

/// One parameter's first and second moments.
#[derive(Debug, Clone)]
enum Moments {
    /// For f32 parameters on the CPU: plain buffers, updated in place.
    Host {
        m: Vec<f32>,
        v: Vec<f32>,
        shape: Shape,
    },
    /// Elsewhere (and as loaded from a file until the first step): tensors.
    Tensors { m: Tensor, v: Tensor },
}

impl Moments {
    fn tensors(&self) -> Result<(Tensor, Tensor)> {
        Ok(match self {
            Moments::Host { m, v, shape } => (
                Tensor::from_slice(m, shape, &Device::Cpu)?,
                Tensor::from_slice(v, shape, &Device::Cpu)?,
            ),
            Moments::Tensors { m, v } => (m.clone(), v.clone()),
        })
    }
}

/// The optimizer and its state: step count and first/second moments per parameter name.
#[derive(Debug, Clone)]
pub struct AdamW {
    cfg: AdamWConfig,
    t: u64,
    moments: BTreeMap<String, Moments>,
}

const EXP_AVG: &str = "exp_avg.";
const EXP_AVG_SQ: &str = "exp_avg_sq.";

impl AdamW {
    pub fn new(cfg: AdamWConfig) -> Self {
        Self {
            cfg,
            t: 0,
            moments: BTreeMap::new(),
        }
    }

    pub fn config(&self) -> &AdamWConfig {
        &self.cfg
    }
    pub fn lr(&self) -> f64 {
        self.cfg.lr
    }
    /// Changes the learning rate; moments and the step count are kept (as PyTorch does when
    /// a schedule edits `param_group["lr"]`).
    pub fn set_lr(&mut self, lr: f64) {
        self.cfg.lr = lr;
    }
    /// Changes β₁ (a one-cycle schedule cycles it as PyTorch's `OneCycleLR` does); like
    /// PyTorch, the next step's bias correction uses the new value.
    pub fn set_beta1(&mut self, beta1: f64) {
        self.cfg.beta1 = beta1;
    }
    /// Number of steps taken so far.
    pub fn steps(&self) -> u64 {
        self.t
    }

    /// One update of every parameter from `grads` (by parameter name; every parameter needs
    /// one). The step count is shared by all parameters.
    pub fn step(&mut self, params: &Params, grads: &BTreeMap<String, Tensor>) -> Result<()> {
        for (name, var) in params.iter() {
            let g = grads
                .get(name)
                .ok_or_else(|| OptimError::MissingGradient(name.clone()))?;
            if g.dims() != var.dims() {
                return Err(OptimError::Invalid(format!(
                    "gradient of `{name}` has shape {:?}, the parameter {:?}",
                    g.dims(),
                    var.dims()
                )));
            }
        }
        let AdamWConfig {
            lr,
            beta1,
            beta2,
            eps,
            weight_decay,
        } = self.cfg;
        let t = self.t + 1;
        let bc1 = 1.0 - beta1.powi(t as i32);
        let bc2_sqrt = (1.0 - beta2.powi(t as i32)).sqrt();
        let step_size = lr / bc1;
        let c = [lr, beta1, beta2, eps, weight_decay, step_size, bc2_sqrt];
        for (name, var) in params.iter() {
            let g = grads[name].to_dtype(DType::F32)?.detach();
            let p = var.as_tensor();
            if p.device().is_cpu() && p.dtype() == DType::F32 && p.is_contiguous() {
                let n = p.elem_count();
                let entry = match self.moments.remove(name) {
                    Some(Moments::Tensors { m, v })
                        if m.dims() != p.dims() || v.dims() != p.dims() =>
                    {
                        return Err(OptimError::Invalid(format!(
                            "optimizer state for `{name}` has shape {:?}, the parameter {:?}",
                            m.dims(),
                            p.dims()
                        )))
                    }
                    Some(Moments::Tensors { m, v }) => Moments::Host {
                        m: m.flatten_all()?.to_vec1::<f32>()?,
                        v: v.flatten_all()?.to_vec1::<f32>()?,
                        shape: p.shape().clone(),
                    },
                    Some(host) => host,
                    None => Moments::Host {
                        m: vec![0.0; n],
                        v: vec![0.0; n],
                        shape: p.shape().clone(),
                    },
                };
                let Moments::Host {
                    mut m,
                    mut v,
                    shape,
                } = entry
                else {
                    unreachable!("converted to host moments above")
                };
                p.inplace_op2(
                    &g.to_device(&Device::Cpu)?.contiguous()?,
                    &InPlaceUpdate {
                        m: Mutex::new(&mut m),
                        v: Mutex::new(&mut v),
                        c,
                    },
                )?;
                self.moments
                    .insert(name.clone(), Moments::Host { m, v, shape });
                continue;
            }
            let p = p.detach();
            let (m_prev, v_prev) = match self.moments.get(name) {
                Some(mo) => {
                    let (m, v) = mo.tensors()?;
                    (
                        Some(m.to_device(p.device())?),
                        Some(v.to_device(p.device())?),
                    )
                }
                None => (None, None),
            };
            let m = match m_prev {
                Some(m) => (m.affine(beta1, 0.0)? + g.affine(1.0 - beta1, 0.0)?)?,
                None => g.affine(1.0 - beta1, 0.0)?,
            };
            let g2 = g.sqr()?.affine(1.0 - beta2, 0.0)?;
            let v = match v_prev {
                Some(v) => (v.affine(beta2, 0.0)? + g2)?,
                None => g2,
            };
            let denom = (v.sqrt()? / bc2_sqrt)?.affine(1.0, eps)?;
            let decayed = p.affine(1.0 - lr * weight_decay, 0.0)?;
            let new = (decayed - (m.div(&denom)?.affine(step_size, 0.0))?)?;
            var.set(&new)?;
            self.moments.insert(name.clone(), Moments::Tensors { m, v });
        }
        self.t = t;
        Ok(())
    }

    /// The moments as `exp_avg.<name>` / `exp_avg_sq.<name>` (PyTorch's state names).
    pub fn state_tensors(&self) -> Result<BTreeMap<String, Tensor>> {
        let mut out = BTreeMap::new();
        for (k, mo) in &self.moments {
            let (m, v) = mo.tensors()?;
            out.insert(format!("{EXP_AVG}{k}"), m);
            out.insert(format!("{EXP_AVG_SQ}{k}"), v);
        }
        Ok(out)
    }

    /// Replaces the state with moments named as by [`AdamW::state_tensors`] and step count `t`.
    pub fn load_state(&mut self, tensors: &BTreeMap<String, Tensor>, t: u64) -> Result<()> {
        let mut exp_avg = BTreeMap::new();
        let mut exp_avg_sq = BTreeMap::new();
        for (k, v) in tensors {
            let v = v.to_dtype(DType::F32)?;
            if let Some(n) = k.strip_prefix(EXP_AVG_SQ) {
                exp_avg_sq.insert(n.to_string(), v);
            } else if let Some(n) = k.strip_prefix(EXP_AVG) {
                exp_avg.insert(n.to_string(), v);
            } else {
                return Err(OptimError::Invalid(format!(
                    "optimizer state tensor `{k}` is neither exp_avg.* nor exp_avg_sq.*"
                )));
            }
        }
        if exp_avg.keys().ne(exp_avg_sq.keys()) {
            return Err(OptimError::Invalid(
                "optimizer state has first and second moments for different parameters".into(),
            ));
        }
        if (t == 0) != exp_avg.is_empty() {
            return Err(OptimError::Invalid(format!(
                "optimizer state at step {t} with {} moment tensors",
                exp_avg.len()
            )));
        }
        self.moments = exp_avg
            .into_iter()
            .zip(exp_avg_sq.into_values())
            .map(|((name, m), v)| (name, Moments::Tensors { m, v }))
            .collect();
        self.t = t;
        Ok(())
    }

    /// Writes the moments as safetensors, with the step count and hyper-parameters in the
    /// file's metadata; written to a temporary file and renamed, so a crash never leaves a
    /// truncated state behind.
    pub fn save(&self, path: &Path) -> Result<()> {
        let err = |msg: String| OptimError::State {
            path: path.to_path_buf(),
            msg,
        };
        // Rust prints f64 in the shortest form that parses back to the same bits.
        let c = &self.cfg;
        let meta: BTreeMap<String, String> = [
            ("format", "robustvit-adamw".to_string()),
            ("step", self.t.to_string()),
            ("lr", c.lr.to_string()),
            ("beta1", c.beta1.to_string()),
            ("beta2", c.beta2.to_string()),
            ("eps", c.eps.to_string()),
            ("weight_decay", c.weight_decay.to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        model::weights::write_safetensors_with_metadata(&self.state_tensors()?, path, &meta)
            .map_err(|e| err(e.to_string()))
    }

    /// Reads a state written by [`AdamW::save`]; the moments go to `device`.
    pub fn load(path: &Path, device: &Device) -> Result<Self> {
        let err = |msg: String| OptimError::State {
            path: path.to_path_buf(),
            msg,
        };
        let bytes = std::fs::read(path).map_err(|e| err(format!("cannot be read: {e}")))?;
        let (_, header) = safetensors::SafeTensors::read_metadata(&bytes)
            .map_err(|e| err(format!("is not a valid safetensors file: {e}")))?;
        let meta = header
            .metadata()
            .clone()
            .ok_or_else(|| err("has no metadata (not an optimizer state)".into()))?;
        let get = |k: &str| -> Result<&String> {
            meta.get(k)
                .ok_or_else(|| err(format!("metadata lacks `{k}` (not an optimizer state)")))
        };
        let num = |k: &str| -> Result<f64> {
            get(k)?
                .parse()
                .map_err(|e| err(format!("metadata `{k}`: {e}")))
        };
        let t: u64 = get("step")?
            .parse()
            .map_err(|e| err(format!("metadata `step`: {e}")))?;
        let cfg = AdamWConfig {
            lr: num("lr")?,
            beta1: num("beta1")?,
            beta2: num("beta2")?,
            eps: num("eps")?,
            weight_decay: num("weight_decay")?,
        };
        let tensors: BTreeMap<String, Tensor> =
            candle_core::safetensors::load_buffer(&bytes, device)
                .map_err(|e| err(format!("could not be decoded: {e}")))?
                .into_iter()
                .collect();
        let mut opt = Self::new(cfg);
        opt.load_state(&tensors, t)
            .map_err(|e| err(e.to_string()))?;
        Ok(opt)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// β₁ set between steps is used by the next step, in the moment and in its bias correction
    /// (PyTorch reads `betas` at every step). Gradient +1 then −1 on every parameter, lr 0.1, no
    /// decay, ε 0: step 1 moves each value by −0.1 for any β₁; step 2 with β₁ 0.95 then 0.85 has
    /// m = 0.85·0.05 − 0.15 = −0.1075, m̂ = m/(1 − 0.85²) and v̂ = 1, so it moves by −0.1·m̂.
    #[test]
    fn beta1_changes_take_effect_at_the_next_step() {
        let cfg = model::VitConfig::vit(8, 1, 2, 8, 4);
        let run = |b1: [f64; 2]| -> f64 {
            let vit = model::Vit::random(&cfg, 0, &Device::Cpu).unwrap();
            let before = vit.params().snapshot().unwrap();
            let mut opt = AdamW::new(AdamWConfig {
                lr: 0.1,
                weight_decay: 0.0,
                eps: 0.0,
                ..AdamWConfig::default()
            });
            for (g, b) in [1f64, -1.0].into_iter().zip(b1) {
                opt.set_beta1(b);
                let grads = before
                    .iter()
                    .map(|(k, t)| (k.clone(), t.ones_like().unwrap().affine(g, 0.0).unwrap()))
                    .collect();
                opt.step(vit.params(), &grads).unwrap();
            }
            let after = vit.params().snapshot().unwrap();
            let deltas: Vec<f64> = before
                .iter()
                .flat_map(|(k, t)| {
                    let d = (&after[k] - t).unwrap().flatten_all().unwrap();
                    d.to_vec1::<f32>().unwrap()
                })
                .map(f64::from)
                .collect();
            let d0 = deltas[0];
            assert!(deltas.iter().all(|d| (d - d0).abs() < 1e-5));
            d0
        };
        let expected = -0.1 + 0.1 * 0.1075 / (1.0 - 0.85 * 0.85);
        let got = run([0.95, 0.85]);
        assert!((got - expected).abs() < 1e-5, "{got} vs {expected}");
        // Constant β₁ 0.9: m̂ = (0.09 − 0.1)/(1 − 0.81).
        let got = run([0.9, 0.9]);
        assert!((got - (-0.1 + 0.1 * 0.01 / 0.19)).abs() < 1e-5, "{got}");
    }

    #[test]
    fn schedule_matches_reference() {
        let paper = |epoch| step_decay_lr(1e-6, 0.85, 2, epoch);
        assert_eq!(paper(0), 1e-6);
        assert_eq!(paper(1), 1e-6);
        assert!((paper(2) - 0.85e-6).abs() < 1e-20);
        assert!((paper(5) - 1e-6 * 0.85 * 0.85).abs() < 1e-20);
    }
}
