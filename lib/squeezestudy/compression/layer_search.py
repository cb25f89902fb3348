"""The third 500x round (docs/headline-search.md): per-layer sparsity from a sensitivity scan and
iterative pruning with longer retraining, on the frozen recipe's seeds, sealed:

    squeezestudy deep-compression layers headline2-e120-s0     # scan, allocate, the 5 settings
    squeezestudy deep-compression layers headline2-e120-s1 --only layers-i3-4bit

Seed 0's run scans its layers on validation and writes the allocation every seed uses
(`<setting>-allocation.json`: per bit width the per-layer shares, and the uniform share of the
same size); the other seeds read it, so the setting chosen on seed 0 is applied unchanged.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from squeezestudy.compression.grid import LOG_DIR, OUT_DIR, Source, run_lanes, source
from squeezestudy.core import fileio

TARGET_BYTES = 195_000  # the allocation's size, 1.5% under the 500x line (197,968 bytes)


@dataclass(frozen=True)
class Setting:
    allocation: str  # "layers" (from the scan) or "uniform" (the same size, one share for all)
    bits: int
    prune_steps: int
    prune_epochs: int
    share_epochs: int

    def tag(self) -> str:
        return self.allocation + (f"-i{self.prune_steps}" if self.prune_steps > 1 else "")


SETTINGS = {  # the plan's five, by file-name part (`<run>-dc-<name>`)
    "layers-5bit": Setting("layers", 5, 1, 4, 1),
    "layers-4bit": Setting("layers", 4, 1, 4, 1),
    "layers-i3-5bit": Setting("layers", 5, 3, 12, 2),
    "layers-i3-4bit": Setting("layers", 4, 3, 12, 2),
    "uniform-i3-4bit": Setting("uniform", 4, 3, 12, 2),
}
LANES = (("layers-i3-4bit", "uniform-i3-4bit"), ("layers-i3-5bit", "layers-5bit", "layers-4bit"))


def seed0(run: str) -> str:
    setting, _, seed = run.rpartition("-s")
    if not setting or not seed.isdigit():
        raise ValueError(f"{run!r} is not a seed of a setting (`<setting>-s<seed>`)")
    return f"{setting}-s0"


def allocation_path(run: str, out_dir: Path = OUT_DIR) -> Path:
    return Path(out_dir) / f"{seed0(run).removesuffix('-s0')}-allocation.json"


def _model(run: str):
    """The run's trained model (`weights.load_model`: its digest checked) and the architecture a
    compressed file of it records."""
    from squeezestudy.data import fashion_mnist as fmnist
    from squeezestudy.runs.weights import load_model

    src = source("run", run)  # exports the weights if they are not yet
    kwargs = {"num_classes": fmnist.NUM_CLASSES, "in_channels": 1, **src.model_kwargs}
    return load_model(run), {"model": src.model, "kwargs": kwargs}


def make_allocation(run: str, out_dir: Path = OUT_DIR, echo=print) -> dict:
    """Seed 0's scan (`<run>-sensitivity.csv`) and the allocation of every bit width the settings
    use, written once; later calls read it back."""
    path = allocation_path(run, out_dir)
    if path.is_file():
        return json.loads(path.read_text())
    if run != seed0(run):
        raise FileNotFoundError(f"{path} is missing: the allocation comes from seed 0; run "
                                f"`squeezestudy deep-compression layers {seed0(run)}` first")
    from squeezestudy.compression import layers
    from squeezestudy.data import fashion_mnist as fmnist
    from squeezestudy.data.fashion_mnist import Batches

    net, arch = _model(run)
    dataset = fmnist.load()
    mean, std = dataset.mean_std()
    table = layers.scan(net, Batches(dataset.val, 1000, mean=mean, std=std), log=echo)
    fileio.write_text(Path(out_dir) / f"{run}-sensitivity.csv", table.round(6).to_csv(index=False))
    allocation = {"from": run, "target_bytes": TARGET_BYTES, "layers": {}, "uniform": {}}
    for bits in sorted({s.bits for s in SETTINGS.values()}):
        allocation["layers"][str(bits)] = layers.allocate(net, table, bits, TARGET_BYTES, arch)
        allocation["uniform"][str(bits)] = layers.uniform_share(net, bits, TARGET_BYTES, arch)
        echo(f"{bits}-bit: per layer {allocation['layers'][str(bits)]['kept']:.1%} kept "
             f"(tolerance {allocation['layers'][str(bits)]['tolerance']:.2f} points), uniform "
             f"{allocation['uniform'][str(bits)]['density']:.1%}")
    fileio.write_text(path, json.dumps(allocation, indent=2) + "\n")
    return allocation


def density_of(setting: Setting, allocation: dict) -> float | dict[str, float]:
    entry = allocation[setting.allocation][str(setting.bits)]
    return entry["densities"] if setting.allocation == "layers" else entry["density"]


def _lane(src: Source, names: tuple[str, ...], allocation: dict, out_dir: str, log_file: str) -> list[str]:
    import torch

    from squeezestudy.compression import deep_compression

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    done = []
    try:
        with open(log_file, "a") as log:
            for name in names:
                s = SETTINGS[name]
                record = deep_compression.compress_run(
                    src.weights, src.model, src.model_kwargs, density_of(s, allocation), s.bits, out_dir,
                    prune_epochs=s.prune_epochs, share_epochs=s.share_epochs, lr=1e-4, augment=src.augment,
                    label_smoothing=src.label_smoothing, sealed=True, prune_steps=s.prune_steps,
                    tag=s.tag(), log=lambda line: print(line, file=log, flush=True))
                print(json.dumps({k: record[k] for k in ("name", "file_bytes", "val_acc")}), file=log,
                      flush=True)
                done.append(record["name"])
    finally:  # as it was, where the lane ran in the caller's process
        torch.set_num_threads(threads)
    return done


def run(run_name: str, only: str | None = None, jobs: int = 2, out_dir: Path = OUT_DIR,
        log_dir: Path = LOG_DIR, echo=print) -> list[str]:
    """The round on one seed: every setting in LANES (seed 0), or the one setting `only`. A
    setting whose record exists is not run again (a stopped round resumes where it was)."""
    if only is not None and only not in SETTINGS:
        raise ValueError(f"--only {only}: not a setting of this round; use one of {', '.join(SETTINGS)}")
    src = source("run", run_name)
    allocation = make_allocation(run_name, out_dir, echo)
    lanes = [tuple(n for n in lane if (only is None or n == only)
                   and not (Path(out_dir) / f"{run_name}-dc-{n}.json").is_file()) for lane in LANES]
    lanes = [lane for lane in lanes if lane]
    Path(log_dir).mkdir(parents=True, exist_ok=True)
    log_file = str(Path(log_dir) / f"deep-compression-{run_name}.log")
    echo(f"layers: {sum(map(len, lanes))} settings of {run_name} in {len(lanes)} lanes; log: {log_file}")
    args = [(src, lane, allocation, str(out_dir), log_file) for lane in lanes]
    names = run_lanes(_lane, args, min(jobs, len(args)))
    echo(f"recorded: {', '.join(names) or 'nothing new'}")
    return names


SEEDS = 3


def unseal(setting: str, recipe: str = "headline2-e120", out_dir: Path = OUT_DIR, log: Path | None = None,
           dataset=None, echo=print) -> list[dict]:
    """Stage D's end: the test accuracy of the chosen setting's three files, read back from the
    files, opened once. Each record gets `test_acc`, `uncompressed_test_acc` (its run's, already
    unsealed) and `unsealed_at`; a line goes to outputs/unsealed.csv. Every file is checked before
    any is opened; one opened already is not opened again."""
    import time

    from squeezestudy.compression import deep_compression as dc
    from squeezestudy.core.paths import RUNS_DIR
    from squeezestudy.data import fashion_mnist as fmnist
    from squeezestudy.runs import sealed
    from squeezestudy.training.evaluate import evaluate
    from squeezestudy.training.rundir import read_metrics

    if setting not in SETTINGS:
        raise ValueError(f"{setting}: not a setting of this round; use one of {', '.join(SETTINGS)}")
    paths = [Path(out_dir) / f"{recipe}-s{seed}-dc-{setting}.json" for seed in range(SEEDS)]
    missing = [p.name for p in paths if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"{', '.join(missing)} not recorded: compress every seed first "
                                f"(`squeezestudy deep-compression layers {recipe}-sN --only {setting}`)")
    records = [json.loads(p.read_text()) for p in paths]
    for record in records:
        if not record.get("sealed"):
            raise sealed.SealError(f"{record['name']} was not compressed sealed: nothing to unseal")
    out = []
    for path, record in zip(paths, records, strict=True):
        if record.get("unsealed_at"):
            echo(f"{record['name']}: unsealed already at {record['unsealed_at']} (test "
                 f"{record['test_acc']:.4f}); the test split is opened once")
            out.append(record)
            continue
        dataset = dataset if dataset is not None else fmnist.load()
        mean, std = dataset.mean_std()
        model = dc.load(path.with_suffix(".sqdc"), expect=dc.expectation(record))
        test_loss, test_acc = evaluate(model, fmnist.Batches(dataset.test, 1000, mean=mean, std=std))
        run = record["name"].split("-dc-")[0]
        uncompressed = read_metrics(RUNS_DIR / run / "metrics.json")["test_acc"]
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        record = {**record, "test_acc": test_acc, "uncompressed_test_acc": uncompressed, "unsealed_at": stamp}
        fileio.write_text(path, json.dumps(record, indent=2) + "\n")
        sealed._append(Path(log or sealed.UNSEAL_LOG), {"run": record["name"], "unsealed_at": stamp,
                                                        "val_acc": record["val_acc"], "test_acc": test_acc,
                                                        "test_loss": test_loss})
        echo(f"{record['name']}: {record['file_bytes']:,} bytes, test {test_acc:.4f} (uncompressed "
             f"{uncompressed:.4f}), unsealed {stamp}")
        out.append(record)
    return out
