#!/usr/bin/env bash
# One prepared GPU check of tuneable-gan: at most 8 minutes on one GPU, on a machine with torch
# and torchvision (Python 3.12) but no Ray and no package registry. Writes ONE Markdown table,
# $OUT/gpu_check.md (every step's log under $OUT/logs/).
#
#   OUT=DIR [REFERENCE=.ref/DiffAugment-biggan-cifar] [WHEELS=.wheels] bash benchmarks/gpu_check.sh
#   GPU_CHECK_SMOKE=1 OUT=/tmp/x bash benchmarks/gpu_check.sh      # on CPU, tiny, about a minute
#
# Prepare here, then carry both ignored paths to the GPU machine:
#   bash benchmarks/fetch_wheels.sh                   # .wheels/, ~44 MiB
#   cp -r PATH/DiffAugment-biggan-cifar .ref/         # the reference checkout, never committed
#
# Steps: the wheels the machine lacks (pip --no-index into a temporary --target, or unzipped
# where there is no pip), the environment (the project must import), step_speed.py in fp32 and
# bf16 (dcgan / sngan / biggan x none / DigGAN / R1 / LeCam, one interleaved run),
# vs_reference.py in fp32 and bf16 (ours; the reference always fp32), pack.py (1 / 2 / 4 / 8
# processes on the GPU) and an Inception evaluation of 10k samples (gpu_check.py fid). Each step
# has its own time limit and all of them share GPU_CHECK_BUDGET seconds (460; 8 minutes with the
# report); a step that fails or runs out of time puts its error into the table and the script
# goes on.
set -u
cd "$(dirname "$0")/.."
ROOT=$(pwd)
: "${OUT:?set OUT to the directory the table goes to}"
mkdir -p "$OUT/logs"
OUT=$(cd "$OUT" && pwd)
SMOKE=${GPU_CHECK_SMOKE:-0}
# The first Python that has torch (a machine's torch may live under `python` only).
PY=${PYTHON:-}
if [ -z "$PY" ]; then
  for candidate in python3 python; do
    if command -v "$candidate" > /dev/null && "$candidate" -c "import torch" 2> /dev/null; then
      PY=$(command -v "$candidate")
      break
    fi
  done
fi
PY=${PY:-python3}
REFERENCE=${REFERENCE:-$ROOT/.ref/DiffAugment-biggan-cifar}
WHEELS=${WHEELS:-$ROOT/.wheels}
BUDGET=${GPU_CHECK_BUDGET:-460}
START=$(date +%s)
STEPS="$OUT/logs/steps.tsv"
: > "$STEPS"
SITE=$(mktemp -d "${TMPDIR:-/tmp}/tuneable-gan-check.XXXXXX")
trap 'rm -rf "$SITE"' EXIT
export PY WHEELS SITE
export PYTHONPATH="$ROOT:$SITE/site${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
export TUNEABLE_GAN_CACHE="$SITE/cache" TUNEABLE_GAN_TICKETS="$SITE/tickets"

record() {  # NAME STATUS SECONDS LOG
  printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" >> "$STEPS"
}

run_step() {  # NAME LIMIT_S CMD...: CMD under a time limit, its output in logs/NAME.log
  local name=$1 limit=$2
  shift 2
  local log="$OUT/logs/$name.log"
  # 15 s stay for the report; a step never starts with less than 10 s left.
  local left=$(( BUDGET - ($(date +%s) - START) - 15 ))
  if (( left < 10 )); then
    echo "not run: the ${BUDGET} s budget was spent" > "$log"
    record "$name" skipped 0 "$log"
    return
  fi
  (( limit > left )) && limit=$left
  local t0 rc status
  t0=$(date +%s.%N)
  timeout -k 5 "$limit" "$@" > "$log" 2>&1
  rc=$?
  status=ok
  if (( rc == 124 || rc == 137 )); then
    status="timeout after ${limit} s"
  elif (( rc != 0 )); then
    status="error (exit $rc)"
  fi
  record "$name" "$status" "$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN {printf "%.1f", b - a}')" "$log"
}

not_run() {  # NAME WHY
  echo "$2" > "$OUT/logs/$1.log"
  record "$1" "error (not run)" 0 "$OUT/logs/$1.log"
}

install_wheels() {  # the carried wheels whose module does not import already
  if [ ! -d "$WHEELS" ]; then
    echo "no wheels directory at $WHEELS: nothing installed"
    return 0
  fi
  local want=() whl dist mod
  for whl in "$WHEELS"/*.whl; do
    [ -e "$whl" ] || continue
    dist=$(basename "$whl" | cut -d- -f1 | tr '[:upper:]' '[:lower:]')
    case $dist in
      pyyaml) mod=yaml ;;
      scikit_learn) mod=sklearn ;;
      *) mod=$dist ;;
    esac
    if "$PY" -c "import $mod" 2> /dev/null; then
      echo "$dist: already importable, kept"
    else
      want+=("$whl")
      echo "$dist" >> "$SITE/installed.txt"
    fi
  done
  [ ${#want[@]} -eq 0 ] && return 0
  if "$PY" -m pip --version > /dev/null 2>&1; then
    "$PY" -m pip install --no-index --no-deps --no-compile --disable-pip-version-check --quiet \
      --target "$SITE/site" "${want[@]}"
  else
    # A wheel is a zip laid out for site-packages: unpacked, it imports.
    for whl in "${want[@]}"; do "$PY" -m zipfile -e "$whl" "$SITE/site" || return 1; done
  fi
  echo "installed into $SITE/site: $(tr '\n' ' ' < "$SITE/installed.txt")"
}
export -f install_wheels

if [ "$SMOKE" = 1 ]; then
  DEV=cpu
  SS_ARGS=(--device cpu)
  if grep -q -- '"--smoke"' benchmarks/step_speed.py; then
    SS_ARGS+=(--smoke --threads 1)
  else
    SS_ARGS+=(--arches dcgan --rounds 1 --steps-small 1 --steps-large 1 --threads 1)
  fi
  PRECISIONS=(fp32)
  VS_ARGS=(--smoke --threads 1)
  PACK_ARGS=(--smoke --counts 1,2 --timeout 60)
  FID_ARGS=(--smoke --samples 2 --calls 1)
  LIMIT_SS=60 LIMIT_VS=60 LIMIT_PACK=90 LIMIT_FID=90
else
  DEV=cuda
  SS_ARGS=(--device cuda --rounds 3 --steps-small 20 --steps-large 5)
  PRECISIONS=(fp32 bf16)
  VS_ARGS=(--rounds 5 --steps 10 --threads 4)
  PACK_ARGS=(--counts 1,2,4,8 --seconds 10 --timeout 60)
  FID_ARGS=(--samples 10000)
  LIMIT_SS=120 LIMIT_VS=45 LIMIT_PACK=130 LIMIT_FID=90
fi

run_step wheels 60 bash -c install_wheels
GPU_CHECK_INSTALLED=$([ -f "$SITE/installed.txt" ] && tr '\n' ' ' < "$SITE/installed.txt")
export GPU_CHECK_INSTALLED
run_step env 45 "$PY" benchmarks/gpu_check.py env

# Both precisions in one run: its cells interleave, so the bf16 / fp32 ratios are fair.
if grep -q -- '"--precision"' benchmarks/step_speed.py; then
  run_step step_speed "$LIMIT_SS" "$PY" benchmarks/step_speed.py "${SS_ARGS[@]}" \
    --precision both
else
  run_step step_speed_fp32 "$LIMIT_SS" "$PY" benchmarks/step_speed.py "${SS_ARGS[@]}"
  not_run step_speed_bf16 "benchmarks/step_speed.py has no --precision option"
fi

for prec in "${PRECISIONS[@]}"; do
  if [ -f "$REFERENCE/train_fns.py" ]; then
    run_step "vs_reference_$prec" "$LIMIT_VS" "$PY" benchmarks/vs_reference.py \
      --reference "$REFERENCE" --device "$DEV" --precision "$prec" "${VS_ARGS[@]}"
  else
    not_run "vs_reference_$prec" "no reference checkout at $REFERENCE (carry one; REFERENCE=PATH)"
  fi
done

run_step pack "$LIMIT_PACK" "$PY" benchmarks/pack.py --device "$DEV" "${PACK_ARGS[@]}"
run_step fid "$LIMIT_FID" "$PY" benchmarks/gpu_check.py fid --device "$DEV" "${FID_ARGS[@]}"

echo "all steps: $(( $(date +%s) - START )) s of a ${BUDGET} s budget; smoke=$SMOKE" \
  > "$OUT/logs/total.log"
record total ok "$(( $(date +%s) - START ))" "$OUT/logs/total.log"
if ! timeout 30 "$PY" benchmarks/gpu_report.py "$STEPS" "$OUT/gpu_check.md"; then
  # No Python to parse the logs: the steps and their status, still one table.
  {
    echo "| step | case | result | status | seconds |"
    echo "|---|---|---|---|---|"
    while IFS=$'\t' read -r name status secs log; do
      echo "| $name | | see logs/$(basename "$log") | $status | $secs |"
    done < "$STEPS"
  } > "$OUT/gpu_check.md"
  cat "$OUT/gpu_check.md"
fi
