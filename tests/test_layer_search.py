"""Per-layer sparsity from a sensitivity scan, iterative pruning, and the third 500x round that
uses them (compression/layers.py, compression/layer_search.py)."""

import json
from pathlib import Path

import pandas as pd
import pytest
import torch

from squeezestudy.compression import deep_compression as dc
from squeezestudy.compression import layer_search, layers
from squeezestudy.models import build

ARCH = {"model": "squeezenet_fmnist", "kwargs": {"num_classes": 10, "in_channels": 1}}


def model():
    torch.manual_seed(0)
    return build(ARCH["model"], **ARCH["kwargs"]).eval()


def test_per_layer_shares_prune_each_layer_to_its_own_share():
    net = model()
    names = dc.weight_names(net)
    shares = {n: (0.25 if i % 2 else 0.8) for i, n in enumerate(names)}
    masks = dc.magnitude_masks(net, shares)
    for name, mask in masks.items():
        assert int(mask.sum()) == max(1, round(shares[name] * mask.numel()))
    with pytest.raises(ValueError, match="missing"):
        dc.magnitude_masks(net, {names[0]: 0.5})
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        dc.magnitude_masks(net, {n: 0.0 for n in names})


def test_iterative_pruning_falls_geometrically_to_the_target():
    assert dc.schedule(0.5, 1) == [0.5]
    steps = dc.schedule(0.125, 3)
    assert steps == pytest.approx([0.5, 0.25, 0.125])
    per_layer = dc.schedule({"a": 0.25, "b": 1.0}, 2)
    assert per_layer == [pytest.approx({"a": 0.5, "b": 1.0}), pytest.approx({"a": 0.25, "b": 1.0})]
    with pytest.raises(ValueError, match="at least 1"):
        dc.schedule(0.5, 0)


def test_iterative_compression_keeps_pruned_weights_pruned_and_reaches_the_share():
    from squeezestudy.data import fashion_mnist as data

    full = data.load()
    batches = data.Batches(full.train.subset(256), 64, mean=0.29, std=0.35, shuffle=True, drop_last=True)
    net, lines = model(), []
    shared = dc.compress(net, batches, 0.3, 4, prune_epochs=3, share_epochs=1, prune_steps=3,
                         log=lines.append)
    assert [line for line in lines if line.startswith("pruning step")] == [
        "pruning step 1/3: 66.9% of the weights kept", "pruning step 2/3: 44.8% of the weights kept",
        "pruning step 3/3: 30.0% of the weights kept"]
    params = dict(net.named_parameters())
    for name, layer in shared.items():
        assert torch.equal(params[name].detach() != 0, layer.mask & (layer.weight() != 0))
    assert dc.kept_share({n: s.mask for n, s in shared.items()}) == pytest.approx(0.3, abs=0.01)
    with pytest.raises(ValueError, match="do not split evenly"):
        dc.compress(model(), batches, 0.3, 4, prune_epochs=4, prune_steps=3)


def fake_scan() -> pd.DataFrame:
    """A scan of model()'s layers where the first layer is fragile and the rest are not."""
    net = model()
    names = dc.weight_names(net)
    params = dict(net.named_parameters())
    rows = [{"layer": n, "weights": params[n].numel(), "density": d,
             "drop_points": (10 * (1 - d) if i == 0 else 2 * (1 - d))} for i, n in enumerate(names)
            for d in layers.SCAN_DENSITIES]
    return pd.DataFrame(rows)


def test_shares_follow_the_tolerance_layer_by_layer():
    table = fake_scan()
    first, *rest = table.layer.unique()
    shares = layers.shares_for(table, 0.9)  # fragile layer: no share within 0.9 points; others: 0.6
    assert shares[first] == 1.0 and {shares[n] for n in rest} == {0.6}
    assert set(layers.shares_for(table, 0.0).values()) == {1.0}
    # a drop computed as 100 * (0.928 - 0.9272) is 0.0800000000000023: within a tolerance of 0.08
    noisy = pd.DataFrame({"layer": ["a", "a"], "weights": [10, 10], "density": [0.3, 0.6],
                          "drop_points": [100 * (0.928 - 0.9272), 0.5]})
    assert noisy.drop_points[0] > 0.08 and layers.shares_for(noisy, 0.08) == {"a": 0.3}


def test_the_allocation_is_the_least_tolerance_that_fits(tmp_path):
    net, table = model(), fake_scan()
    full = layers.dry_bytes(net, 1.0, 4, ARCH)
    target = int(0.7 * full)
    chosen = layers.allocate(net, table, 4, target, ARCH)
    assert chosen["dry_bytes"] <= target
    assert chosen["dry_bytes"] == layers.dry_bytes(net, chosen["densities"], 4, ARCH)
    looser = sorted(t for t in {max(0.0, round(t, 4)) for t in table.drop_points} if t < chosen["tolerance"])
    assert looser and layers.dry_bytes(net, layers.shares_for(table, looser[-1]), 4, ARCH) > target
    with pytest.raises(ValueError, match="no tolerance of the scan"):
        layers.allocate(net, table, 4, 1000, ARCH)
    uniform = layers.uniform_share(net, 4, target, ARCH)
    assert uniform["dry_bytes"] <= target < layers.dry_bytes(net, uniform["density"] + 0.005, 4, ARCH)


def test_the_scan_prunes_one_layer_at_a_time_and_restores_it():
    from squeezestudy.data import fashion_mnist as data

    full = data.load()
    net = model()
    before = {n: p.detach().clone() for n, p in net.named_parameters()}
    val = data.Batches(full.val.subset(200), 100, mean=0.29, std=0.35)
    table = layers.scan(net, val, densities=(0.1, 0.9))
    assert len(table) == 2 * len(dc.weight_names(net))
    assert all(torch.equal(before[n], p) for n, p in net.named_parameters())
    assert table.base_val_acc.nunique() == 1


def test_the_round_runs_its_settings_with_seed_0s_allocation(tmp_path, monkeypatch):
    calls = []

    def fake(weights, model_name, kwargs, density, bits, out_dir, **options):
        calls.append((Path(weights).name, type(density).__name__, bits, options["prune_steps"],
                      options["prune_epochs"], options["sealed"], options["tag"]))
        name = f"{Path(weights).stem}-dc-{options['tag']}-{bits}bit"
        (Path(out_dir) / f"{name}.json").write_text("{}")
        return {"name": name, "file_bytes": 1, "val_acc": 0.5}

    monkeypatch.setattr(dc, "compress_run", fake)
    with pytest.raises(FileNotFoundError, match="allocation comes from seed 0"):
        layer_search.run("headline2-e120-s1", only="layers-i3-4bit", jobs=1, out_dir=tmp_path,
                         log_dir=tmp_path, echo=lambda *a: None)
    densities = {"a": 0.5}
    allocation = {"from": "headline2-e120-s0", "target_bytes": 195_000,
                  "layers": {"4": {"densities": densities}, "5": {"densities": densities}},
                  "uniform": {"4": {"density": 0.6}, "5": {"density": 0.7}}}
    layer_search.allocation_path("headline2-e120-s1", tmp_path).write_text(json.dumps(allocation))
    names = layer_search.run("headline2-e120-s1", only="layers-i3-4bit", jobs=1, out_dir=tmp_path,
                             log_dir=tmp_path, echo=lambda *a: None)
    assert names == ["headline2-e120-s1-dc-layers-i3-4bit"]
    assert calls == [("headline2-e120-s1.pt", "dict", 4, 3, 12, True, "layers-i3")]
    calls.clear()  # every setting; the one recorded already is not run again
    names = layer_search.run("headline2-e120-s1", jobs=1, out_dir=tmp_path, log_dir=tmp_path,
                             echo=lambda *a: None)
    assert len(names) == 4 and ("headline2-e120-s1.pt", "float", 4, 3, 12, True, "uniform-i3") in calls
    with pytest.raises(ValueError, match="not a setting of this round"):
        layer_search.run("headline2-e120-s1", only="layers-3bit", out_dir=tmp_path)
    with pytest.raises(ValueError, match="is not a seed"):
        layer_search.seed0("headline2")


def test_unsealing_the_chosen_files_opens_the_test_split_once(tmp_path, monkeypatch):
    """The three files of the chosen setting, read back and checked against their records, get
    their test accuracy once; a missing seed stops before any file is opened."""
    from squeezestudy.core import paths
    from squeezestudy.data import fashion_mnist as data

    full = data.load()
    small = data.FashionMNIST(full.train.subset(256), full.val.subset(100), full.test.subset(100), Path("."))
    runs = tmp_path / "runs"
    records = []
    for seed in range(3):
        net = model()
        masks = dc.magnitude_masks(net, 0.5)
        dc.apply_masks(net, masks)
        shared = dc.share_weights(net, masks, 4)
        name = f"rec-s{seed}-dc-layers-i3-4bit"
        size = dc.save(tmp_path / f"{name}.sqdc", net, shared, ARCH)
        record = {"name": name, "model": ARCH["model"], "file_bytes": size, "val_acc": 0.9,
                  "test_acc": None, "sealed": True}
        records.append(record)
        (runs / f"rec-s{seed}").mkdir(parents=True)
        (runs / f"rec-s{seed}" / "metrics.json").write_text(json.dumps({"test_acc": 0.93}))
    monkeypatch.setattr(paths, "RUNS_DIR", runs)
    from squeezestudy.training import rundir

    monkeypatch.setattr(rundir, "read_metrics", lambda p: json.loads(Path(p).read_text()))  # a stub run
    log = tmp_path / "unsealed.csv"
    kwargs = {"recipe": "rec", "out_dir": tmp_path, "log": log, "dataset": small, "echo": lambda *a: None}
    (tmp_path / "rec-s0-dc-layers-i3-4bit.json").write_text(json.dumps(records[0]))
    with pytest.raises(FileNotFoundError, match="rec-s1-dc-layers-i3-4bit.json, rec-s2"):
        layer_search.unseal("layers-i3-4bit", **kwargs)
    for record in records[1:]:
        (tmp_path / f"{record['name']}.json").write_text(json.dumps(record))
    opened = layer_search.unseal("layers-i3-4bit", **kwargs)
    assert all(0 <= r["test_acc"] <= 1 and r["uncompressed_test_acc"] == 0.93 and r["unsealed_at"]
               for r in opened)
    assert json.loads((tmp_path / "rec-s2-dc-layers-i3-4bit.json").read_text()) == opened[2]
    assert len(log.read_text().splitlines()) == 4  # header and one line a file
    said = []
    again = layer_search.unseal("layers-i3-4bit", **{**kwargs, "echo": said.append})
    assert again == opened and all("opened once" in line for line in said)
    assert len(log.read_text().splitlines()) == 4
