#!/usr/bin/env bash
# GPU smoke test, for a machine with an NVIDIA GPU, its driver and a CUDA toolkit (11.4-13.4).
#
#   scripts/gpu_smoke.sh [OUT_DIR]        (default ./gpu-smoke-out)
#
# 1. cargo build --release --workspace --all-targets --features cuda   (CUDA_COMPUTE_CAP from nvidia-smi, else 90)
# 2. the golden tests (model, relevance) with ROBUSTVIT_TEST_DEVICE=cuda
# 3. a short training run on the GPU: experiments demo --quick --device cuda (synthetic data)
# 4. the benchmark on the GPU: experiments bench --device cuda, in f32 and with bf16 inference
#    (with PyTorch on the same GPU when python3 has torch + timm + torchvision)
# Each step's log goes to OUT_DIR/<step>.log, timings to OUT_DIR/summary.txt. Needs no network:
# cargo runs --offline, so the crates must already be in ~/.cargo/registry (`cargo fetch` once
# where crates.io is reachable, or copy ~/.cargo from such a machine).
# Extra arguments for the benchmark: BENCH_ARGS (e.g. BENCH_ARGS="--no-torch --runs 5").
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${1:-./gpu-smoke-out}"
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
die() {
  echo "gpu_smoke: $*" >&2
  exit 2
}

# --- what the machine must have -----------------------------------------------------------
command -v nvidia-smi >/dev/null || die "nvidia-smi not found: this needs an NVIDIA GPU with its driver installed"
nvidia-smi >"$OUT/nvidia-smi.txt" 2>&1 || die "nvidia-smi failed (no GPU visible?): see $OUT/nvidia-smi.txt"
if ! command -v nvcc >/dev/null; then
  for d in "${CUDA_HOME:-}" "${CUDA_PATH:-}" /usr/local/cuda /opt/cuda; do
    if [[ -n "$d" && -x "$d/bin/nvcc" ]]; then PATH="$d/bin:$PATH"; break; fi
  done
fi
command -v nvcc >/dev/null || die "nvcc not found: install the CUDA toolkit or set CUDA_HOME (nvcc is looked for in \$CUDA_HOME/bin)"
command -v cargo >/dev/null || die "cargo not found: no Rust toolchain here. Install rustup (1.88 or newer), or copy ~/.rustup and ~/.cargo from a machine that has one"
CUDA_HOME="${CUDA_HOME:-$(cd "$(dirname "$(command -v nvcc)")/.." && pwd)}"
CAP="$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -n1 | tr -d ' .')" || true
export PATH CUDA_HOME CUDA_COMPUTE_CAP="${CUDA_COMPUTE_CAP:-${CAP:-90}}"
export LD_LIBRARY_PATH="$CUDA_HOME/lib64:$CUDA_HOME/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export CARGO_NET_OFFLINE=true CARGO_TERM_COLOR=never
{
  nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap --format=csv
  nvcc --version | tail -n2
  cargo --version
  echo "CUDA_HOME=$CUDA_HOME CUDA_COMPUTE_CAP=$CUDA_COMPUTE_CAP"
} | tee "$OUT/env.txt"
host="$(rustc -vV | sed -n 's/^host: //p')"
cargo fetch --offline --target "$host" >"$OUT/fetch.log" 2>&1 ||
  die "crates missing from ~/.cargo/registry (no network here): run 'cargo fetch' where crates.io is reachable; see $OUT/fetch.log"

# --- the steps ----------------------------------------------------------------------------
failed=0
: >"$OUT/summary.txt"
step() { # step NAME COMMAND...: runs it, logs to OUT/NAME.log, records status and seconds
  local name="$1" t0=$SECONDS rc=0
  shift
  echo "== $name: $*"
  "$@" >"$OUT/$name.log" 2>&1 || rc=$?
  local line
  line="$(printf '%-8s %-5s %5ds  %s' "$name" "$([[ $rc == 0 ]] && echo ok || echo FAIL)" $((SECONDS - t0)) "$*")"
  echo "$line" | tee -a "$OUT/summary.txt"
  [[ $rc == 0 ]] || { failed=1; tail -n 20 "$OUT/$name.log"; }
  return $rc
}

step build cargo build --release --workspace --all-targets --features cuda ||
  die "the cuda build failed: see $OUT/build.log"
# The tests read ROBUSTVIT_TEST_DEVICE (cpu when unset) to pick the device they run on.
step golden env ROBUSTVIT_TEST_DEVICE=cuda \
  cargo test --release --features cuda -p model -p relevance --test golden || true
rm -rf "$OUT/demo" # a finished demo run would be kept, not trained again
step demo cargo run --release --features cuda -p experiments -- \
  demo --quick --device cuda --out "$OUT/demo" || true
# shellcheck disable=SC2086 # BENCH_ARGS is a list of flags
step bench cargo run --release --features cuda -p experiments -- \
  bench --device cuda --out "$OUT/bench-data" ${BENCH_ARGS:-} || true
# shellcheck disable=SC2086
step bench-bf16 cargo run --release --features cuda -p experiments -- \
  bench --device cuda --dtype bf16 --out "$OUT/bench-data" ${BENCH_ARGS:-} || true

echo "== summary ($OUT/summary.txt)"
cat "$OUT/summary.txt"
exit $failed
