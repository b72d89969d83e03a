#!/usr/bin/env bash
# The GPU measurements of docs/benchmarks.md (issue 16), in one call: each task's log goes to $OUT
# (default runs/gpu), and a summary line per task to stdout. Needs a CUDA machine with the package's
# dependencies; the embedded model where installed, else LIFT_DEFAULT_GGUF=/path/to/SmolLM2.gguf.
#
#   TASKS="small small_compile answers cold docs24" bash benchmarks/gpu_suite.sh
#   BUDGET=540 TASKS="docs24_compile" DOCARGS="--pass-overhead 1024" bash benchmarks/gpu_suite.sh
#
# BUDGET (seconds, default 540) bounds the whole call: each task is cut to the time left.
set -u
OUT=${OUT:-runs/gpu}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
SQUAD=${SQUAD:-../shared/data/squad-dev.json}
BUDGET=${BUDGET:-540}
start=$(date +%s)
COMPILE='{"compile": true}'

left() { echo $((BUDGET - ($(date +%s) - start))); }

run() { # run NAME CAP COMMAND...: the command's output in $OUT/NAME.log, GPU utilisation in $OUT/NAME.smi
  local name=$1 cap=$2
  shift 2
  local time_left
  time_left=$(left)
  if [ "$time_left" -lt 20 ]; then echo "SKIP $name (no time left)"; return; fi
  [ "$cap" -gt "$time_left" ] && cap=$time_left
  echo "=== $name (cap ${cap} s) $(date +%T)"
  local smi=
  if command -v nvidia-smi > /dev/null; then
    nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used --format=csv -lms 1000 > "$OUT/$name.smi" &
    smi=$!
  fi
  timeout -k 5 "$cap" "$@" > "$OUT/$name.log" 2>&1
  echo "rc=$? $name $(($(date +%s) - start)) s"
  [ -n "$smi" ] && kill "$smi" 2> /dev/null
  grep -E "RESULT|^\{|^\| |attempt|eager vs|final loss|passed|failed|CUDA graphs failed|^compile:|^clock" "$OUT/$name.log" \
    | grep -v "^|---" | cut -c1-400 | tail -"${TAIL:-12}"
}

# TOKENIZER=DIR (SmolLM2's tokenizer, saved there) serves the random-weight shapes on a machine without
# the model file: fit8b's, and with MODELARGS="--shape smollm2 --tokenizer DIR" the speed tasks' (a random
# model of the embedded one's shape: the same arithmetic; its losses and answers mean nothing).
# Save the tokenizer where the package is installed:
#   python -c 'from lift_integrations import LIFTModel as M; M.from_pretrained(device="cpu").tokenizer.save_pretrained(".device/tok")'
# shellcheck disable=SC2206
speed=(python3 benchmarks/absorb_speed.py --presets dense_qa --engines fused ${MODELARGS:-})
passes=(python3 benchmarks/pass_speed.py --shape smollm2)
python3 -c "import torch, transformers; print(torch.__version__, transformers.__version__, torch.cuda.get_device_name())"
for task in ${TASKS:-small small_compile}; do
  case $task in
    small) run small 120 "${passes[@]}" --rows 4 --tokens 128 --memories 1 --steps 30 ;;
    small_compile) run small_compile 240 "${passes[@]}" --rows 4 --tokens 128 --memories 1 --steps 30 --compile ;;
    passes) run passes 180 "${passes[@]}" --memories 1 24 ;;
    passes_compile) run passes_compile 240 "${passes[@]}" --memories 1 24 --compile ;;
    gil) # a Python thread beside the training thread (absorb_many plans later memories so), and the switch interval
      for extra in "" "--busy-thread" "--busy-thread --switch-interval 0.0002"; do
        # shellcheck disable=SC2086
        run "gil${extra// /}" 90 "${passes[@]}" --memories 24 $extra
      done ;;
    gputest) run gputest 240 python3 -m pytest -p no:cacheprovider -o addopts="" -q tests/core/test_fused.py ;;
    gputest_cuda) run gputest_cuda 120 python3 -m pytest -p no:cacheprovider -o addopts="" -q tests/core/test_fused.py \
      -k cuda ;;
    update) run update 120 python3 benchmarks/update_speed.py --memories 1 24 ;;
    single) run single 200 "${speed[@]}" --lengths 8000 --repeat 2 ;;
    compile) run compile 400 "${speed[@]}" --lengths 8000 --config-json "$COMPILE" --repeat 3 ;;
    cold) run cold 400 "${speed[@]}" --lengths 8000 --config-json "$COMPILE" --processes 2 ;;
    answers) run answers 400 python3 benchmarks/compiled_answers.py --preset dense_qa --length 8000 --questions 80 \
      --json "$OUT/compiled_answers_dense_qa.json" ;;
    docs24) run docs24 560 "${speed[@]}" --documents 24 --squad "$SQUAD" ${DOCARGS:-} ;;
    fit8b) run fit8b 300 python3 benchmarks/absorb_speed.py --presets paper --lengths 32000 --shape llama-8b \
      --gpu-gib 78 ${TOKENIZER:+--tokenizer "$TOKENIZER"} ;;
    docs24_clock) run docs24_clock 560 "${speed[@]}" --documents 24 --squad "$SQUAD" --time-steps ${DOCARGS:-} ;;
    single_clock) run single_clock 200 "${speed[@]}" --lengths 8000 --repeat 2 --time-steps ;;
    docs24_compile) run docs24_compile 560 "${speed[@]}" --documents 24 --squad "$SQUAD" --config-json "$COMPILE" \
      ${DOCARGS:-} ;;
    *) echo "unknown task $task" ;;
  esac
done
echo "done $(($(date +%s) - start)) s"
