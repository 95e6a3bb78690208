#!/usr/bin/env bash
# The GPU checks of one short lease, in order of value, each bounded by `timeout` so one that runs
# long leaves the others their time. Run from the repository root on a machine with one GPU:
#   OUT=/tmp/gpu-out bash benchmarks/gpu_check.sh /path/to/multi30k
# It writes to $OUT: gpu.txt, quant_cuda.txt (tests/test_quant_cuda.py: round-STE equal to torch's
# kernel on CUDA, no host sync in a QAT step of any technique), m30k.log + m30k-compare.txt +
# m30k-runs.tgz (the Multi30k GPU-size suite, recipes/mt-multi30k-gpu.yaml, checkpoints left out),
# quant_speed.txt (step time and peak memory of every technique over float) and throughput-*.txt
# (bf16 and torch.compile speed-ups, QAT step-time ratios, GPU utilisation). Budgets in seconds:
# QUANT_S, M30K_S, SPEED_S, THROUGHPUT_S, COMPILE_S.
set -u
OUT=${OUT:-/tmp/qbench-gpu}
M30K=${1:?usage: gpu_check.sh MULTI30K_FOLDER}
PY=${PY:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}  # make setup's, else the image's
RESULTS=${RESULTS:-/tmp/qbench-gpu-results}
export PYTHONUNBUFFERED=1
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
"$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)" | tee -a "$OUT/gpu.txt"

echo "== qbench.quant on CUDA (budget ${QUANT_S:-60} s)"
timeout -k 5 "${QUANT_S:-60}" "$PY" -m pytest -q -p no:cacheprovider tests/test_quant_cuda.py 2>&1 | tee "$OUT/quant_cuda.txt"

echo "== Multi30k en-de at GPU size (budget ${M30K_S:-330} s)"
start=$(date +%s)
timeout -k 10 "${M30K_S:-330}" "$PY" -m qbench run recipes/mt-multi30k-gpu.yaml --set "data.path=$M30K" \
  --jobs 5 --keep-going --results "$RESULTS" --no-progress > "$OUT/m30k.log" 2>&1
echo "exit $? after $(( $(date +%s) - start )) s" | tee -a "$OUT/m30k.log"
tail -25 "$OUT/m30k.log"
"$PY" -m qbench compare --results "$RESULTS" > "$OUT/m30k-compare.txt" 2>&1
cat "$OUT/m30k-compare.txt"
(cd "$RESULTS" && tar czf "$OUT/m30k-runs.tgz" --exclude='*.pt' --exclude='*.safetensors' runs index.sqlite)

echo "== quant_speed (budget ${SPEED_S:-45} s)"
timeout -k 5 "${SPEED_S:-45}" "$PY" benchmarks/quant_speed.py --device cuda --rounds 60 2>&1 | tee "$OUT/quant_speed.txt"

echo "== throughput: fp32, bf16, QAT ratios of every technique (budget ${THROUGHPUT_S:-70} s)"
timeout -k 5 "${THROUGHPUT_S:-70}" "$PY" benchmarks/throughput.py --device cuda --batch 32 --no-compile \
  2>&1 | tee "$OUT/throughput-eager.txt"

echo "== throughput: fp32 vs torch.compile (bf16), QAT ratio of ste and rand compiled (budget ${COMPILE_S:-110} s)"
timeout -k 5 "${COMPILE_S:-110}" "$PY" benchmarks/throughput.py --device cuda --batch 32 --compile --skip-bf16 \
  --no-mt --techniques ste rand 2>&1 | tee "$OUT/throughput-compile.txt"
