#!/usr/bin/env bash
# The accelerator checks, in one run that fits a 10-minute device call (one GPU).
#   bash bench/gpu_suite.sh [OUT_DIR]        (default: $OUT if set, else bench/results/gpu)
# 1. Pallas kernels vs their XLA references (bench/kernels.py)                ~2 min
# 2. decoder step cost, verify vs greedy, batch 1 and 16: the Whisper-decoder and
#    Whisper-encoder recipe models and configs/paper.py (bench/step_cost.py)  ~4 min
# 3. train steps/s: 2-D bucketing vs random on synthetic audio
#    (bench/train_throughput.py, configs/small.py)                            ~2 min
# Each step writes JSON under OUT_DIR that bench/report.py reads; a failing step is
# reported and the next one still runs. Installs jax[cuda12] when no GPU jax is present.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT_DIR="${1:-${OUT:-bench/results/gpu}}"
mkdir -p "$OUT_DIR"
if ! python3 -c "import jax, sys; sys.exit(jax.default_backend() == 'cpu')" 2>/dev/null; then
  python3 -m pip install --quiet -e ".[test]" "jax[cuda12]" >"$OUT_DIR/pip.log" 2>&1 || true
fi
python3 -c "import jax; print('backend', jax.default_backend(), jax.devices())" | tee "$OUT_DIR/devices.txt"
status=0
run() {  # name, timeout seconds, command...
  local name=$1 limit=$2; shift 2
  echo "== $name"; local t0=$SECONDS
  timeout "$limit" "$@" >"$OUT_DIR/$name.log" 2>&1; local rc=$?
  tail -n 25 "$OUT_DIR/$name.log"
  echo "== $name: rc=$rc in $((SECONDS - t0)) s"; [ $rc -eq 0 ] || status=1
}
run kernels 150 python3 bench/kernels.py --out "$OUT_DIR/kernels_gpu.json"
run step_cost 240 python3 bench/step_cost.py \
  --configs configs/recipes/whisper_tiny_decoder_cpu.py:K=4,head=latent,configs/recipes/whisper_tiny_cpu.py,configs/paper.py:K=4 \
  --strategies greedy,verify,tree --widths 1,4 --batch_sizes 1,16 \
  --steps 32 --repeats 10 --out "$OUT_DIR/step_cost_gpu.json"
run train_throughput 150 python3 bench/train_throughput.py --config configs/small.py:K=4 \
  --manifest "${MANIFEST:-../shared/data/kathleen/train.jsonl}" --num_utts 96 --steps 16 \
  --out "$OUT_DIR"
exit $status
