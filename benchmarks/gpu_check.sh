#!/usr/bin/env bash
# One prepared run on a lent CUDA machine (README, "GPU runs"). In order:
#  1. the CUDA test (bf16 + channels_last chosen automatically, data on the GPU);
#  2. the throughput benchmark, alone on the GPU;
#  3. two batches of runs.yaml side by side on the one GPU (`squeezestudy batch --gpus`: one
#     notebook-05 run a Dask worker, every worker on GPU $GPU): AlexNet-112 seeds 0 and 1
#     (profile `full`, outputs/runs) and the profile `recipes` (outputs/recipes: AlexNet-112's
#     seed 2, an fp32 and an AdamW run of seed 0, and a recipe grid for the two small models,
#     each point in bf16 and fp32: recipe choice on the validation split, and the bf16 cost).
#     Runs whose executed notebook is already there are skipped; finished run directories
#     are read back by notebook 05, not retrained.
# Writes into $OUT; the runs and executed notebooks come back as one tarball without checkpoints.
# Dry run on a CPU (the batches only check the manifest and list their runs):
#   DRY=1 BENCH_ARGS='--models lenet --quick --steps 2 --repeats 1'
# Needs: the repo, data/FashionMNIST/raw with the four IDX files, the study's environment
# (`make`: PyTorch with CUDA, papermill, Dask, ipykernel).
set -uo pipefail
OUT=$(realpath -m "${OUT:-outputs/gpu}")
mkdir -p "$OUT/logs"
export PYTHONPATH=$PWD/lib PYTHONUNBUFFERED=1 FASHION_MNIST_DIR=$PWD/data/FashionMNIST/raw MPLBACKEND=Agg
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$OUT/gpu.txt" 2>&1
python3 -c "import torch, torchvision; print(torch.__version__, torchvision.__version__, torch.cuda.get_device_name() if torch.cuda.is_available() else 'no cuda')" >> "$OUT/gpu.txt" 2>&1
cat "$OUT/gpu.txt"

python3 -m pytest -q -p no:cacheprovider tests/test_train.py -k "cuda or beats_chance" 2>&1 | tail -3 | tee "$OUT/pytest.txt"

timeout 120 python3 -m squeezestudy.cli bench ${BENCH_ARGS:---no-compile --steps 30 --repeats 3} --out "$OUT" > "$OUT/bench.log" 2>&1
tail -n 30 "$OUT/bench.log"

export OMP_NUM_THREADS=2  # many processes share 16 cores (the batch passes it to every run)
batch() {  # log name, batch arguments...: one batch, stopped (Ctrl-C: runs interrupted, resumable) at the limit
  local name=$1; shift
  timeout -s INT -k 120 "${RUN_LIMIT:-380}" python3 -m squeezestudy.cli batch --gpus "${GPU:-0}" \
    ${DRY:+--dry-run} "$@" > "$OUT/logs/batch-$name.log" 2>&1
}
batch alexnet --profile full --only alexnet-s --jobs 2 &
batch recipes --profile recipes --jobs 19 &
wait
tail -n 25 "$OUT"/logs/batch-*.log > "$OUT/train.txt"
cat "$OUT/train.txt"
paths=()
for p in outputs/runs/alexnet-s0 outputs/runs/alexnet-s1 outputs/notebooks/alexnet-s0.ipynb \
         outputs/notebooks/alexnet-s1.ipynb outputs/recipes outputs/notebooks/recipes; do
  [ -e "$p" ] && paths+=("$p")
done
tar czf "$OUT/runs.tar.gz" --exclude='*.pt' "${paths[@]}" -C "$OUT" logs
rm -r "$OUT/logs"
ls -la "$OUT"
