#!/usr/bin/env bash
# The Deep Compression grids behind notebooks 11 and 12: each recipe (share of weights kept,
# bits) applied to a trained model's fp32 weights, then retraining after pruning and after weight
# sharing (AdamW, lr 1e-4), recorded from the file read back
# (outputs/deep_compression/<name>.json and .sqdc). Two lanes of recipes at a time, one thread each.
#   scripts/deep_compression_grid.sh one-fire    # squeezenet_fmnist-s0 (notebook 11): 2 + 1 epochs
#   scripts/deep_compression_grid.sh headline    # headline-b96-s0, plain recipe: 2 + 1 epochs
#   scripts/deep_compression_grid.sh run RUN     # seed 0 of the recipe notebook 12 chose: 4 + 1
#                                                # epochs, with the run's augmentation and label smoothing
#   scripts/deep_compression_grid.sh long RUN    # the same run just under the 500x line (47% and 45%
#                                                # kept, 6-bit) with 12 + 2 epochs of retraining
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=1
PY=${PYTHON:-.venv/bin/python}
export PRUNE_EPOCHS=2 SHARE_EPOCHS=1
# The model, its arguments and its recipe's regularisation, from a run's metrics.json.
from_run() {
  eval "$($PY - "$1" <<'PY'
import json, shlex, sys
from squeezestudy.paths import RUNS_DIR
from squeezestudy.rundir import read_metrics
c = read_metrics(RUNS_DIR / sys.argv[1] / "metrics.json")["config"]
print(f"export MODEL={c['model']} KW={shlex.quote(json.dumps(c['model_kwargs']))} "
      f"AUGMENT={int(c['augment'])} SMOOTHING={c['label_smoothing']}")
PY
)"
}
case "${1:-}" in
  one-fire) export WEIGHTS=outputs/compression/squeezenet_fmnist-s0-fp32.pt MODEL=squeezenet_fmnist KW='{}'
            export AUGMENT=0 SMOOTHING=0
            lanes=("1.0 8|1.0 6|0.7 6" "0.7 8|0.5 8"); log=squeezenet_fmnist ;;
  headline) export WEIGHTS=outputs/weights/headline-b96-s0.pt; from_run headline-b96-s0
            [ -f "$WEIGHTS" ] || $PY -m squeezestudy.weights export headline-b96-s0
            lanes=("1.0 6|0.5 6" "1.0 8|0.7 6"); log=headline-b96-s0 ;;
  run|long) [ -n "${2:-}" ] || { echo "usage: $0 $1 RUN (a finished run with weights)" >&2; exit 2; }
            export WEIGHTS=outputs/weights/$2.pt; from_run "$2"
            [ -f "$WEIGHTS" ] || $PY -m squeezestudy.weights export "$2"
            if [ "$1" = run ]; then export PRUNE_EPOCHS=4; lanes=("1.0 8|1.0 6|0.7 6" "0.5 6|0.4 6|0.6 6")
            else export PRUNE_EPOCHS=12 SHARE_EPOCHS=2; lanes=("0.47 6" "0.45 6"); fi
            log=$2 ;;
  *) echo "usage: $0 one-fire|headline|run RUN|long RUN" >&2; exit 2 ;;
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
e = os.environ
dc.compress_run(e['WEIGHTS'], e['MODEL'], json.loads(e['KW']), float(e['DENSITY']), int(e['BITS']),
                'outputs/deep_compression', prune_epochs=int(e['PRUNE_EPOCHS']),
                share_epochs=int(e['SHARE_EPOCHS']), lr=1e-4, augment=e['AUGMENT'] == '1',
                label_smoothing=float(e['SMOOTHING']))" >> "$log" 2>&1
  done
}
for l in "${lanes[@]}"; do lane "$l" & done
wait
