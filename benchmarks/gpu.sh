#!/usr/bin/env bash
# GPU throughput of `chunk | embed`, naive and late (issue 12). One GPU, no lancedb, no network.
#
#   benchmarks/gpu.sh MODEL_DIR [DOCS] [DEVICE]
#
# MODEL_DIR: a sentence-transformers directory (all-MiniLM-L6-v2; float16 safetensors are fine).
# DOCS (default 7000 generated documents: ~106k chunks of <= 128 tokens, 11M tokens) and DEVICE
# (default cuda) let the same script run on a CPU with a small input: benchmarks/gpu.sh DIR 6 cpu.
# Results go to $OUT (default a temp dir): report.json (tokens/s end to end and for the model alone, GPU memory, min/mean cosine of bf16
# vs fp32 on the same device), timings.json and the runs' stderr summaries.
set -euo pipefail
MODEL=${1:?usage: benchmarks/gpu.sh MODEL_DIR [DOCS] [DEVICE]}
DOCS=${2:-7000}
DEVICE=${3:-cuda}
HERE=$(cd "$(dirname "$0")" && pwd)
PY=${PYTHON:-python}
command -v arrowsmith >/dev/null && AS=(arrowsmith) || AS=("$PY" -m arrowsmith.cli)
D=${OUT:-$(mktemp -d)}
mkdir -p "$D"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
echo "results in $D" >&2

SMI=
if [ "$DEVICE" != cpu ] && command -v nvidia-smi >/dev/null; then
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$D/gpu.csv"
  nvidia-smi --query-gpu=memory.used --format=csv,nounits -lms 250 > "$D/nvidia-smi.csv" &
  SMI=$!
  trap '[ -n "$SMI" ] && kill $SMI 2>/dev/null || true' EXIT
fi

"$PY" "$HERE/gpu_bench.py" corpus --docs "$DOCS" "$D/docs.jsonl"
CHUNK=("${AS[@]}" chunk "$D/docs.jsonl" --tokenizer "model:$MODEL" --max-tokens 128)
EMBED=("${AS[@]}" embed --model "$MODEL" --device "$DEVICE")

now() { date +%s.%N; }
declare -A T
run() {  # name, then a shell pipeline (string); its wall time goes into timings.json
  local name=$1; shift
  local t0; t0=$(now)
  bash -c "$*" 2> "$D/$name.stderr" || { cat "$D/$name.stderr" >&2; exit 1; }
  T[$name]=$("$PY" -c "print(round($(now) - $t0, 3))")
  echo "$name: ${T[$name]} s; $(tail -1 "$D/$name.stderr")" >&2
}
q() { printf '%q ' "$@"; }

run chunk_only "$(q "${CHUNK[@]}") -o $(q "$D/chunked.arrows")"
run embed_naive "$(q "${EMBED[@]}") $(q "$D/chunked.arrows") -o $(q "$D/naive_pre.arrows")"
run pipe_naive "$(q "${CHUNK[@]}") | $(q "${EMBED[@]}") -o $(q "$D/naive.arrows")"
run pipe_late "$(q "${CHUNK[@]}") | $(q "${EMBED[@]}") --late -o $(q "$D/late.arrows")"
run embed_naive_fp32 "$(q "${EMBED[@]}") --dtype fp32 $(q "$D/chunked.arrows") -o $(q "$D/naive_fp32.arrows")"
run embed_late_fp32 "$(q "${EMBED[@]}") --dtype fp32 --late $(q "$D/chunked.arrows") -o $(q "$D/late_fp32.arrows")"

{ echo "{"; first=1
  for k in "${!T[@]}"; do [ $first = 1 ] || echo ","; first=0; printf '"%s": %s' "$k" "${T[$k]}"; done
  echo "}"; } > "$D/timings.json"
[ -n "$SMI" ] && kill $SMI 2>/dev/null || true
SMI=
"$PY" "$HERE/gpu_bench.py" report --model "$MODEL" --dir "$D" --device "$DEVICE"
rm -f "$D"/*.arrows "$D/docs.jsonl"  # keep $OUT small: the report and logs are what comes back
