#!/usr/bin/env bash
# One prepared run on a lent CUDA machine (README, "GPU runs"). In order:
#  1. the CUDA test (bf16 + channels_last chosen automatically, data on the GPU);
#  2. the throughput benchmark, alone on the GPU;
#  3. in parallel processes on the one GPU: AlexNet-112 (3 seeds, plus one fp32 and one
#     AdamW run of seed 0), and a recipe grid for the two small models, each point in
#     bf16 and fp32 (recipe choice on the validation split, and the bf16 cost).
# Writes into $OUT; the runs come back as one tarball without checkpoints.
# Dry run on a CPU: DRY='--train-subset 1000 --epochs 1' BENCH_ARGS='--models lenet --quick --steps 2 --repeats 1'
# Needs: the repo, data/FashionMNIST/raw with the four IDX files, PyTorch with CUDA.
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

export OMP_NUM_THREADS=2  # many processes share 16 cores
train() {  # name, out dir, arguments...
  local name=$1 dir=$2; shift 2
  timeout "${RUN_LIMIT:-380}" python3 -m squeezestudy.cli train --quiet --out "$dir/$name" "$@" ${DRY:-} > "$OUT/logs/train-$name.log" 2>&1
}
alexnet_sgd="--model alexnet --epochs 30 --optimizer sgd --lr 0.02 --batch-size 128 --weight-decay 0.0005 --label-smoothing 0.1 --augment"
alexnet_adamw="--model alexnet --epochs 30 --optimizer adamw --lr 0.0003 --batch-size 128 --weight-decay 0.05 --label-smoothing 0.1 --augment"
for s in 0 1 2; do train alexnet-s$s outputs/runs $alexnet_sgd --seed $s & done
train alexnet-fp32-s0 outputs/recipes $alexnet_sgd --seed 0 --precision fp32 &
train alexnet-adamw-s0 outputs/recipes $alexnet_adamw --seed 0 &
# small-model grid: name and arguments per point
grid=(
  "squeezenet_fmnist-g1|--model squeezenet_fmnist --epochs 30 --lr 0.003 --weight-decay 0.0005"
  "squeezenet_fmnist-g2|--model squeezenet_fmnist --epochs 30 --lr 0.01 --weight-decay 0.0005"
  "squeezenet_fmnist-g3|--model squeezenet_fmnist --epochs 60 --lr 0.01 --weight-decay 0.0005"
  "squeezenet_fmnist-g4|--model squeezenet_fmnist --epochs 60 --lr 0.01 --weight-decay 0 --batch-size 128"
  "lenet-g1|--model lenet --epochs 30 --lr 0.003 --weight-decay 0.0005"
  "lenet-g2|--model lenet --epochs 30 --lr 0.003 --weight-decay 0.0005 --augment"
  "lenet-g3|--model lenet --epochs 60 --lr 0.003 --weight-decay 0.05 --augment"
  "lenet-g4|--model lenet --epochs 30 --lr 0.003 --weight-decay 0.05 --label-smoothing 0.1"
)
for point in "${grid[@]}"; do
  name=${point%%|*}; args=${point#*|}
  for p in bf16 fp32; do train "$name-$p" outputs/recipes $args --optimizer adamw --seed 0 --precision $p & done
done
wait
grep -H -E "test|Error|error" "$OUT"/logs/train-*.log | tail -n 40 > "$OUT/train.txt"
cat "$OUT/train.txt"
tar czf "$OUT/runs.tar.gz" --exclude='*.pt' outputs/runs/alexnet-s0 outputs/runs/alexnet-s1 outputs/runs/alexnet-s2 outputs/recipes -C "$OUT" logs
rm -r "$OUT/logs"
ls -la "$OUT"
