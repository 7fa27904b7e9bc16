#!/usr/bin/env bash
# The regime study's next runs on one GPU, several copies of `scripts/regime_study.py` at once, within
# a time limit; the new records, the regenerated page and the copies' logs are packed into one file.
#
# Usage: scripts/regime_study_gpu.sh OUT_DIR [COPIES=8] [MINUTES=9]
#
# Runs from the repository root. Needs jax with a CUDA backend and jirl's dependencies importable;
# on a machine without a package index, WHEELS=DIR installs the missing ones from a folder of wheels
# first (into a temporary target, not the environment). Fine-tunes the committed base the CPU runs
# started from (docs/results/regime_runs/base). Trains the parts in SIZES (default 5000,1000-replica:
# N = 1000's records come from the study's first base, which is lost, so no new run joins them; its
# stage 2 runs again from the committed base as the part 1000-replica).
#
# Each copy takes the next unfinished run of the queue (the committed records are finished runs);
# copies start no new run after MINUTES - 3 minutes (--stop_after), and whatever still runs a minute
# before MINUTES is stopped (that run is lost; it starts again next time). float32 matrix products
# run at full precision (JAX_DEFAULT_MATMUL_PRECISION=highest), not TF32, as on the CPU. The records
# say which device each run trained on (`train_devices`), and the page marks their times with its
# name. Result: OUT_DIR/regime_gpu.tar.gz, to unpack at the repository root and commit.
set -uo pipefail
OUT=${1:?usage: scripts/regime_study_gpu.sh OUT_DIR [COPIES] [MINUTES]}
COPIES=${2:-8}
MINUTES=${3:-9}
START=$(date +%s)
mkdir -p "$OUT/logs"

if [ -n "${WHEELS:-}" ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/jirl_site "$WHEELS"/*.whl || exit 1
  export PYTHONPATH=/tmp/jirl_site
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
export XLA_PYTHON_CLIENT_PREALLOCATE=false PYTHONUNBUFFERED=1 JAX_DEFAULT_MATMUL_PRECISION=highest

SIZES=${SIZES:-5000,1000-replica}
if [ ! -f docs/results/regime_runs/base/model.safetensors ]; then
  echo "docs/results/regime_runs/base holds no base model; run the study on the CPU first." >&2
  exit 2
fi
python3 -c "import jax; print('devices:', jax.devices())" || exit 1
for part in ${SIZES//,/ }; do  # once, before the copies start (they would all prepare at once)
  python3 -m jirl.cli prepare --task=arith --task_config="shifted_${part%%-*}" --data_dir=data || exit 1
done

stop_after=$(( MINUTES * 60 - 180 - ($(date +%s) - START) ))
for i in $(seq "$COPIES"); do
  python3 scripts/regime_study.py --sizes "$SIZES" --stop_after "$stop_after" \
    >"$OUT/logs/copy_$i.log" 2>&1 &
  sleep 2  # each claims its run before the next looks
done
while [ -n "$(jobs -rp)" ] && [ $(( $(date +%s) - START )) -lt $(( MINUTES * 60 - 60 )) ]; do
  sleep 5
done
for pid in $(jobs -rp); do pkill -TERM -P "$pid"; kill -TERM "$pid"; done 2>/dev/null
wait

python3 scripts/regime_study.py --sizes 1000,5000,1000-replica --report_only >"$OUT/logs/report.log" 2>&1
nvidia-smi >"$OUT/logs/nvidia_smi.txt" 2>&1
tar czf "$OUT/regime_gpu.tar.gz" docs/results/regime.md docs/results/regime_*.png \
  docs/results/regime_runs -C "$OUT" logs
records=$(tar tzf "$OUT/regime_gpu.tar.gz" | grep -c 'regime_runs/.*json')
echo "$records records in $OUT/regime_gpu.tar.gz, the committed ones among them unchanged"
