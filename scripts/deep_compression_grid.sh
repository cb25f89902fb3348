#!/usr/bin/env bash
# The Deep Compression grids behind notebooks 11 and 12: each recipe (share of weights kept,
# bits) applied to a trained model's fp32 weights, 2 epochs of retraining after pruning and 1
# after weight sharing (AdamW, lr 1e-4), recorded from the file read back
# (outputs/deep_compression/<name>.json and .sqdc). Two recipes at a time, one thread each.
#   scripts/deep_compression_grid.sh one-fire    # squeezenet_fmnist-s0 (notebook 11)
#   scripts/deep_compression_grid.sh headline    # headline-b96-s0 (notebook 12)
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=1
PY=${PYTHON:-.venv/bin/python}
case "${1:-}" in
  one-fire) export WEIGHTS=outputs/compression/squeezenet_fmnist-s0-fp32.pt MODEL=squeezenet_fmnist KW='{}'
            lanes=("1.0 8|1.0 6|0.7 6" "0.7 8|0.5 8"); log=squeezenet_fmnist ;;
  headline) export WEIGHTS=outputs/weights/headline-b96-s0.pt MODEL=squeezenet_design
            export KW='{"base_e": 96, "incr_e": 96, "sr": 0.125, "pct3x3": 0.5, "freq": 2, "conv1_filters": 96, "bypass": "simple"}'
            [ -f "$WEIGHTS" ] || $PY -m squeezestudy.weights export headline-b96-s0
            lanes=("1.0 6|0.5 6" "1.0 8|0.7 6"); log=headline-b96-s0 ;;
  *) echo "usage: $0 one-fire|headline" >&2; exit 2 ;;
esac
mkdir -p outputs/logs
log=outputs/logs/deep-compression-$log.log
lane() {
  IFS='|' read -ra recipes <<< "$1"
  for recipe in "${recipes[@]}"; do
    read -r density bits <<< "$recipe"
    DENSITY=$density BITS=$bits nice -n 5 $PY -c "
import json, os
from squeezestudy import deep_compression as dc
dc.compress_run(os.environ['WEIGHTS'], os.environ['MODEL'], json.loads(os.environ['KW']),
                float(os.environ['DENSITY']), int(os.environ['BITS']), 'outputs/deep_compression',
                prune_epochs=2, share_epochs=1, lr=1e-4)" >> "$log" 2>&1
  done
}
for l in "${lanes[@]}"; do lane "$l" & done
wait
