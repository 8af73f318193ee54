//! The gradient contract between a training forward and its backward passes.
//!
//! [`crate::Vit::forward_train`] returns a [`TrainForward`]: the logits and every block's
//! attention map, live in candle's graph. Gradients come out of it through two methods, and
//! only through them:
//!
//! 1. [`TrainForward::attention_grads`]`(score)`: d`score`/dA for every block's attention map
//!    A, detached. This pass computes input gradients only: the fused ops skip their weight and
//!    bias gradients (a third of a backward's arithmetic), and no parameter receives anything
//!    from it. The relevance map's gradient weights are this pass.
//! 2. [`TrainForward::backward`]`(loss)`: d`loss`/d(parameter) for every parameter, as
//!    [`Grads`]. The fused CPU blocks compute their parameters' gradients themselves (their
//!    weights are not nodes of candle's graph, so candle's gradient store does not hold them);
//!    [`Grads`] answers for both.
//!
//! Either pass may run alone (cross-entropy training runs only the second), in either order,
//! once or more per forward.
//!
//! Inside, the ops of one forward share a `GradSink` (whether the running pass wants
//! parameter gradients, and the fused ops' parameter gradients) and one `GradSlot` per
//! attention map (where the attention op leaves dL/dA).

use candle_core::backprop::GradStore;
use candle_core::{Tensor, Var};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use crate::vit::Params;
use crate::Result;

/// Output of a training forward pass, and the only way to its gradients (see the module doc).
pub struct TrainForward {
    pub logits: Tensor,
    /// Post-softmax attention of every block, (B, heads, N, N), live in the graph.
    pub attn: Vec<Tensor>,
    /// Where dL/d`attn[l]` is read after a backward pass (candle keeps no gradients of
    /// intermediate tensors).
    pub(crate) probes: Vec<AttnProbe>,
    pub(crate) sink: GradSink,
    pub(crate) params: Params,
}

impl TrainForward {
    /// First backward pass: d`score`/d`attn[l]` for every block, detached, in block order
    /// (`None` for a map the score does not depend on). Input gradients only: no parameter
    /// gradient is computed, so it costs about two thirds of [`TrainForward::backward`].
    pub fn attention_grads(&self, score: &Tensor) -> Result<Vec<Option<Tensor>>> {
        for p in &self.probes {
            p.arm();
        }
        let store = {
            let _pass = self.sink.input_grads_only();
            score.backward()?
        };
        Ok(self
            .probes
            .iter()
            .map(|p| p.grad(&store).map(|g| g.detach()))
            .collect())
    }

    /// Second backward pass: back-propagates `loss` and returns the gradient of every
    /// parameter it reaches.
    pub fn backward(&self, loss: &Tensor) -> Result<Grads> {
        self.sink.clear();
        let store = loss.backward()?;
        Ok(Grads {
            fused: self.sink.take(),
            store,
            params: self.params.clone(),
        })
    }
}

/// Parameter gradients of one [`TrainForward::backward`], by timm parameter name.
pub struct Grads {
    /// From the fused blocks' own backward.
    fused: BTreeMap<String, Tensor>,
    /// candle's, for every other parameter.
    store: GradStore,
    params: Params,
}

impl Grads {
    /// The gradient of parameter `name`; `None` when the loss does not reach it (candle prunes
    /// the branch behind a zero loss weight) or no parameter has that name.
    pub fn get(&self, name: &str) -> Option<Tensor> {
        self.fused.get(name).cloned().or_else(|| {
            let var = self.params.get(name)?;
            self.store.get(var.as_tensor()).cloned()
        })
    }
}

/// Shared by the ops of one training forward: whether the running backward pass wants
/// parameter gradients, and the parameter gradients the fused ops computed, by name.
#[derive(Clone, Default)]
pub(crate) struct GradSink(Arc<SinkState>);

#[derive(Default)]
struct SinkState {
    input_only: AtomicBool,
    params: Mutex<BTreeMap<String, Tensor>>,
}

/// Restores parameter gradients when dropped (also on unwind).
pub(crate) struct InputGradsOnly<'a>(&'a GradSink);

impl Drop for InputGradsOnly<'_> {
    fn drop(&mut self) {
        self.0 .0.input_only.store(false, Ordering::Relaxed);
    }
}

impl GradSink {
    /// Whether the running backward pass computes parameter gradients.
    pub(crate) fn params_wanted(&self) -> bool {
        !self.0.input_only.load(Ordering::Relaxed)
    }

    /// Input gradients only until the guard is dropped.
    fn input_grads_only(&self) -> InputGradsOnly<'_> {
        self.0.input_only.store(true, Ordering::Relaxed);
        InputGradsOnly(self)
    }

    fn params(&self) -> candle_core::Result<std::sync::MutexGuard<'_, BTreeMap<String, Tensor>>> {
        self.0
            .params
            .lock()
            .map_err(|_| candle_core::Error::Msg("poisoned parameter gradients".into()))
    }

    /// Records the gradient `data` of parameter `name` (shaped and placed like `like`).
    pub(crate) fn put(&self, name: &str, data: Vec<f32>, like: &Tensor) -> candle_core::Result<()> {
        let t = Tensor::from_vec(data, like.shape(), like.device())?;
        self.params()?.insert(name.to_string(), t);
        Ok(())
    }

    fn clear(&self) {
        if let Ok(mut m) = self.params() {
            m.clear();
        }
    }

    fn take(&self) -> BTreeMap<String, Tensor> {
        self.params()
            .map(|mut m| std::mem::take(&mut *m))
            .unwrap_or_default()
    }
}

/// How dL/dA of one attention map is obtained after a backward pass.
pub(crate) enum AttnProbe {
    /// Recorded by the fused attention op in the first backward pass that reaches it (CPU).
    Slot(GradSlot),
    /// A zero-valued variable added to the map: its gradient is the map's (other devices).
    Var(Var),
}

impl AttnProbe {
    /// Makes a slot wait for the next backward pass.
    fn arm(&self) {
        if let AttnProbe::Slot(s) = self {
            s.arm();
        }
    }

    /// dL/dA from `store` (the store of the backward pass that produced it). A slot hands its
    /// gradient out once; a second call returns `None`.
    fn grad(&self, store: &GradStore) -> Option<Tensor> {
        match self {
            AttnProbe::Slot(s) => s.take(),
            AttnProbe::Var(v) => store.get(v.as_tensor()).cloned(),
        }
    }
}

/// Receives dL/dA of one block's attention map: the fused attention's backward records the
/// gradient of its attention input the first time a backward pass reaches it. This replaces a
/// zero-valued probe added to the map (an extra (B, H, N, N) tensor per block, plus a
/// zero-filled buffer and an add per gradient edge in every backward).
#[derive(Clone, Default)]
pub struct GradSlot(std::sync::Arc<Mutex<SlotState>>);

#[derive(Default)]
enum SlotState {
    #[default]
    Waiting,
    Captured(Tensor),
    Taken,
}

impl GradSlot {
    pub(crate) fn offer(&self, g: &Tensor) {
        if let Ok(mut s) = self.0.lock() {
            if matches!(*s, SlotState::Waiting) {
                *s = SlotState::Captured(g.clone());
            }
        }
    }
    /// Waits for the next backward pass, forgetting a gradient captured before.
    pub(crate) fn arm(&self) {
        if let Ok(mut s) = self.0.lock() {
            *s = SlotState::Waiting;
        }
    }
    /// The captured gradient, once; `None` before any backward pass and after it was taken.
    pub fn take(&self) -> Option<Tensor> {
        let mut s = self.0.lock().ok()?;
        match std::mem::replace(&mut *s, SlotState::Taken) {
            SlotState::Captured(t) => Some(t),
            SlotState::Waiting => {
                *s = SlotState::Waiting;
                None
            }
            SlotState::Taken => None,
        }
    }
}
