import dataclasses
import json
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from squeezestudy.compression import deep_compression as dc
from squeezestudy.compression import huffman, sqdc
from squeezestudy.models import build

ARCH = {"model": "squeezenet_fmnist", "kwargs": {"num_classes": 10, "in_channels": 1}}


def test_huffman_round_trip_and_optimal_length():
    rng = np.random.default_rng(0)
    symbols = np.minimum(rng.geometric(0.3, 5000) - 1, 15)
    lengths = huffman.code_lengths(symbols, 16)
    data = huffman.encode(symbols, lengths)
    assert np.array_equal(huffman.decode(data, lengths, len(symbols)), symbols)
    counts = np.bincount(symbols, minlength=16)
    p = counts[counts > 0] / counts.sum()
    entropy_bits = -(p * np.log2(p)).sum() * len(symbols)
    assert entropy_bits <= huffman.coded_bits(symbols, lengths) < entropy_bits + len(symbols)
    assert len(data) == -(-huffman.coded_bits(symbols, lengths) // 8)
    one = np.zeros(10, dtype=np.int64)  # a single symbol still round-trips
    assert np.array_equal(huffman.decode(huffman.encode(one, huffman.code_lengths(one, 4)),
                                         huffman.code_lengths(one, 4), 10), one)
    with pytest.raises(ValueError, match="corrupt"):
        huffman.decode(data[:10], lengths, len(symbols))


def test_kmeans_shares_values_and_keeps_extremes():
    torch.manual_seed(0)
    values = torch.cat([torch.randn(1000) * 0.01, torch.tensor([0.5, -0.4])])
    centroids, assign = dc.kmeans_1d(values, 16)
    assert len(centroids) == 16 and assign.max() < 16
    quantized = centroids[assign]
    nearest = centroids[(values[:, None] - centroids[None]).abs().argmin(1)]
    assert torch.equal(quantized, nearest)  # every value goes to its nearest shared value
    grid = torch.linspace(-0.4, 0.5, 16)  # Lloyd's iterations improve on the initial grid
    on_grid = grid[(values[:, None] - grid[None]).abs().argmin(1)]
    assert ((quantized - values) ** 2).mean() < 0.5 * ((on_grid - values) ** 2).mean()
    assert quantized[-2].item() == pytest.approx(0.5) and quantized[-1].item() == pytest.approx(-0.4)


def test_file_round_trip_gives_the_compressed_model(tmp_path):
    torch.manual_seed(0)
    model = build(ARCH["model"], **ARCH["kwargs"])
    masks = dc.magnitude_masks(model, 0.3)
    dc.apply_masks(model, masks)
    shared = dc.share_weights(model, masks, bits=5)
    for name, layer in shared.items():  # every kept weight is one of <= 32 shared values
        w = dict(model.named_parameters())[name].detach()
        assert torch.unique(w[layer.mask]).numel() <= 32 and (w[~layer.mask] == 0).all()
        assert layer.mask.float().mean().item() == pytest.approx(0.3, abs=0.01)
    size = dc.save(tmp_path / "m.sqdc", model, shared, ARCH)
    assert size == (tmp_path / "m.sqdc").stat().st_size
    dense_fp32 = sum(p.numel() for p in model.parameters()) * 4
    assert size < dense_fp32 / 5  # 30% density, 5-bit indices, Huffman-coded
    loaded = dc.load(tmp_path / "m.sqdc")
    for (name, a), b in zip(model.state_dict().items(), loaded.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    x = torch.randn(4, 1, 28, 28)
    assert torch.equal(model.eval()(x), loaded(x))


def test_a_layer_that_keeps_every_weight_has_no_position_stream(tmp_path):
    """Kept whole, a layer's gaps are all 1: the file leaves them out (`dense` in its header), is
    smaller by about a bit a weight, and decodes to the same model; a file written before the
    dense layout (every layer with its gaps) still reads."""
    torch.manual_seed(0)
    model = build(ARCH["model"], **ARCH["kwargs"])
    masks = dc.magnitude_masks(model, 1.0)  # keep everything
    shared = dc.share_weights(model, masks, bits=8)
    size = dc.save(tmp_path / "dense.sqdc", model, shared, ARCH)
    raw = (tmp_path / "dense.sqdc").read_bytes()
    (length,) = struct.unpack_from("<I", raw, len(sqdc.MAGIC))
    header = json.loads(raw[len(sqdc.MAGIC) + 4:len(sqdc.MAGIC) + 4 + length])
    assert all(layer["dense"] and len(layer["bytes"]) == 3 for layer in header["layers"])
    weights = sum(m.numel() for m in masks.values())
    gapped = {name: dataclasses.replace(layer, mask=layer.mask.clone()) for name, layer in shared.items()}
    for layer in gapped.values():  # one weight fewer a layer: every layer then needs its gaps
        layer.mask.view(-1)[0] = False
        layer.assign = layer.assign[1:]
    old = dc.save(tmp_path / "gaps.sqdc", model, gapped, ARCH)
    assert old - size >= weights / 8 * 0.9  # about a bit a weight, less the gaps' code lengths
    loaded = dc.load(tmp_path / "dense.sqdc")
    for (name, a), b in zip(model.state_dict().items(), loaded.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    # files written before the dense layout (every layer with its gaps): the committed ones,
    # test_every_committed_compressed_file_is_the_one_its_record_describes


def test_long_gaps_are_bridged_by_fillers():
    mask = torch.zeros(2000, dtype=torch.bool)
    mask[[0, 700, 1999]] = True
    gaps, symbols = sqdc._gaps_with_fillers(mask, torch.tensor([1, 2, 3]), filler=9)
    assert (gaps < 256).all() and symbols.tolist().count(9) == len(symbols) - 3
    positions = np.cumsum(gaps) - 1
    assert positions[symbols != 9].tolist() == [0, 700, 1999]


@pytest.mark.parametrize("damage", ["truncate", "magic", "empty", "garbage-header"])
def test_a_damaged_file_is_named(tmp_path, damage):
    model = build(ARCH["model"], **ARCH["kwargs"])
    masks = dc.magnitude_masks(model, 0.5)
    path = tmp_path / "m.sqdc"
    dc.save(path, model, dc.share_weights(model, masks, 4), ARCH)
    raw = path.read_bytes()
    path.write_bytes({"truncate": raw[: len(raw) // 2], "magic": b"XXXX" + raw[4:], "empty": b"",
                      "garbage-header": raw[:10] + b"\xff" * 20 + raw[30:]}[damage])
    with pytest.raises(dc.CompressedFileError, match=r"m\.sqdc: cannot read it .* write it again"):
        dc.load(path)
    with pytest.raises(dc.CompressedFileError, match="no such file"):
        dc.load(tmp_path / "missing.sqdc")


def test_choose_takes_the_smallest_file_within_half_a_validation_point(tmp_path):
    import json

    import pandas as pd

    from squeezestudy.compression import deep_compression as dc

    def record(density, bits, size, val):
        name = f"m-s0-dc-d{density:g}-{bits}bit"
        (tmp_path / f"{name}.json").write_text(json.dumps({
            "name": name, "density": density, "bits": bits, "file_bytes": size, "val_acc": val,
            "uncompressed": {"val_acc": 0.90}}))

    record(1.0, 6, 300, 0.899)
    record(0.7, 6, 200, 0.896)  # -0.4 points: allowed, and smaller
    record(0.5, 6, 150, 0.890)  # -1.0 point: not allowed
    record(1.0, 8, 400, 0.901)
    (tmp_path / "other-s0-dc-d1-6bit.json").write_text("{}")  # another model's record: not read
    table = dc.records(tmp_path, "m-s0")
    assert len(table) == 4
    chosen = dc.choose(table)
    assert chosen.loc[6, "name"] == "m-s0-dc-d0.7-6bit" and chosen.loc[8, "name"] == "m-s0-dc-d1-8bit"
    assert isinstance(chosen, pd.DataFrame)
    with pytest.raises(FileNotFoundError, match="squeezestudy deep-compression"):
        dc.records(tmp_path, "missing")


def test_compress_run_retrains_with_the_models_recipe_and_records_it(tmp_path):
    """The whole run on a few real images: the file read back is the recorded model, and the
    retraining's augmentation and label smoothing are in the record."""
    import json
    from pathlib import Path

    from squeezestudy.data import fashion_mnist as data

    full = data.load()
    small = data.FashionMNIST(full.train.subset(512), full.val.subset(200), full.test.subset(200), Path("."))
    torch.manual_seed(0)
    weights = tmp_path / "net.pt"
    torch.save(build(ARCH["model"], **ARCH["kwargs"]).state_dict(), weights)
    record = dc.compress_run(weights, ARCH["model"], {}, 0.5, 6, tmp_path / "out", prune_epochs=1,
                             share_epochs=1, augment=True, label_smoothing=0.1, dataset=small,
                             log=lambda _: None)
    assert record["augment"] is True and record["label_smoothing"] == 0.1
    assert json.loads((tmp_path / "out" / "net-dc-d0.5-6bit.json").read_text()) == record
    assert record["file_bytes"] == (tmp_path / "out" / "net-dc-d0.5-6bit.sqdc").stat().st_size
    layers = len(dc.weight_names(build(ARCH["model"], **ARCH["kwargs"])))
    assert record["kept"] == pytest.approx(record["weights"] / 2, abs=layers)
    table = dc.records(tmp_path / "out", "net")
    assert table.name.tolist() == ["net-dc-d0.5-6bit"] and table.val_change.notna().all()


def test_retraining_follows_the_label_smoothing_it_is_given():
    from squeezestudy.data import fashion_mnist as data

    full = data.load()
    batches = data.Batches(full.train.subset(256), 64, mean=0.29, std=0.35, shuffle=True, drop_last=True)
    trained = []
    for smoothing in (0.0, 0.1, 0.0):
        torch.manual_seed(0)
        model = build(ARCH["model"], **ARCH["kwargs"])
        dc.retrain(model, batches, 1, 1e-3, label_smoothing=smoothing)
        trained.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
    assert torch.equal(trained[0], trained[2])  # deterministic, so the difference below is the loss's
    assert not torch.equal(trained[0], trained[1])


def test_the_grids_are_a_command_of_the_package(tmp_path, monkeypatch):
    """`squeezestudy deep-compression run RUN` compresses the run's weights with its own recipe's
    regularisation, every recipe of the grid (compress_run itself is tested above)."""
    from squeezestudy import cli
    from squeezestudy.compression import deep_compression
    from squeezestudy.compression import grid as dc_grid

    calls = []
    threads = torch.get_num_threads()

    def fake(weights, model, kwargs, density, bits, out_dir, **options):
        calls.append((Path(weights).name, model, density, bits, options["prune_epochs"],
                      options["augment"], options["label_smoothing"]))
        return {"name": f"{density}-{bits}", "file_bytes": 1, "val_acc": 0.5}

    monkeypatch.setattr(deep_compression, "compress_run", fake)
    names = dc_grid.run_grid("run", "headline-b96aug60-s0", jobs=1, out_dir=tmp_path, log_dir=tmp_path,
                             echo=lambda *a: None)
    assert len(names) == 6 and len(calls) == 6
    assert torch.get_num_threads() == threads  # restored after the in-process lanes
    assert {c[:2] for c in calls} == {("headline-b96aug60-s0.pt", "squeezenet_design")}
    assert {c[4:] for c in calls} == {(4, True, 0.1)}  # 4 + 1 epochs, the run's augmentation, smoothing
    assert (tmp_path / "deep-compression-headline-b96aug60-s0.log").read_text().count('"name"') == 6
    with pytest.raises(ValueError, match="compresses a finished run: name it"):
        dc_grid.run_grid("long", None, jobs=1, out_dir=tmp_path, log_dir=tmp_path)
    assert cli.main(["deep-compression", "long"]) == 2  # a usage error, one line
    # the 500x grid (issue 25): sealed, and one of its settings alone for the other seeds
    calls.clear()
    def fake_sealed(*args, **options):
        calls.append((args[3], args[4], options["sealed"]))
        return {"name": "x", "file_bytes": 1, "val_acc": 0.5}

    monkeypatch.setattr(deep_compression, "compress_run", fake_sealed)
    dc_grid.run_grid("500x", "headline-b96aug60-s1", jobs=1, out_dir=tmp_path, log_dir=tmp_path,
                     echo=lambda *a: None, only=dc_grid.parse_setting("0.6,5"))
    assert calls == [(0.6, 5, True)]
    with pytest.raises(ValueError, match=r"--only 0.5,5 is not a setting of the '500x' grid: 0.6,5, 0.7,4"):
        dc_grid.run_grid("500x", "headline-b96aug60-s1", jobs=1, only=(0.5, 5))
    for bad in ("0.6", "six,5", "0,5", "0.6,9"):
        with pytest.raises(ValueError, match="--only"):
            dc_grid.parse_setting(bad)


def test_a_sealed_compression_computes_no_test_accuracy(tmp_path, monkeypatch):
    from squeezestudy.data import fashion_mnist as data
    from squeezestudy.training import evaluate as evaluate_module

    full = data.load()  # 200 validation images, 100 test images: the sizes tell them apart
    small = data.FashionMNIST(full.train.subset(512), full.val.subset(200), full.test.subset(100), Path("."))
    weights = tmp_path / "net.pt"
    torch.manual_seed(0)
    torch.save(build(ARCH["model"], **ARCH["kwargs"]).state_dict(), weights)
    real, seen = evaluate_module.evaluate, []

    def watching(model, batches, *args):
        seen.append(len(batches.labels))
        return real(model, batches, *args)

    monkeypatch.setattr(evaluate_module, "evaluate", watching)
    record = dc.compress_run(weights, ARCH["model"], {}, 0.5, 5, tmp_path / "out", prune_epochs=1,
                             share_epochs=1, dataset=small, log=lambda _: None, sealed=True)
    assert record["sealed"] is True and record["test_acc"] is None
    assert record["uncompressed"]["test_acc"] is None
    assert seen == [200, 200]  # validation before and after: the test split never evaluated
    assert dc.records(tmp_path / "out", "net", sealed=True).name.tolist() == ["net-dc-d0.5-5bit"]
    with pytest.raises(FileNotFoundError):
        dc.records(tmp_path / "out", "net")  # the first round's (unsealed) records: none here


# --- every file read back is the one recorded (issue 24) -----------------------------------------

def test_a_changed_file_or_another_models_file_is_refused(tmp_path):
    """One flipped bit used to load silently with different weights (129 of 240 random flips);
    another model's file under this name loaded that model."""
    import hashlib

    model = build(ARCH["model"], **ARCH["kwargs"])
    path = tmp_path / "m.sqdc"
    size = dc.save(path, model, dc.share_weights(model, dc.magnitude_masks(model, 0.5), 4), ARCH)
    raw = path.read_bytes()
    record = {"file_bytes": size, "file_sha256": hashlib.sha256(raw).hexdigest(), "model": ARCH["model"]}
    dc.load(path, expect=dc.expectation(record))  # the recorded file loads
    rng = np.random.default_rng(0)
    for position in rng.integers(0, len(raw), 40):
        flipped = bytearray(raw)
        flipped[position] ^= 1 << int(rng.integers(0, 8))
        path.write_bytes(bytes(flipped))
        with pytest.raises(dc.CompressedFileError, match=r"m\.sqdc: not the file that was recorded \(its "
                                                         r"SHA-256 .*restore it from git"):
            dc.load(path, expect=dc.expectation(record))
    path.write_bytes(raw[:-3])
    with pytest.raises(dc.CompressedFileError, match=rf"it is {size - 3:,} bytes, its record says {size:,}"):
        dc.load(path, expect=dc.expectation(record))
    path.write_bytes(raw)
    with pytest.raises(dc.CompressedFileError, match="holds a squeezenet_fmnist, not the squeezenet_design"):
        dc.load(path, expect={"model": "squeezenet_design"})


def test_every_committed_compressed_file_is_the_one_its_record_describes():
    import json

    records = sorted(Path(__file__).resolve().parents[1].glob("outputs/deep_compression/*.json"))
    records = [p for p in records if "density" in json.loads(p.read_text())]
    assert len(records) >= 17
    for p in records:
        record = json.loads(p.read_text())
        raw = p.with_suffix(".sqdc").read_bytes()
        assert record["file_sha256"] and sqdc._unexpected(p, raw, dc.expectation(record)) is None, p.name


def test_a_committed_file_repacked_in_the_dense_layout_is_smaller_with_the_same_weights(tmp_path):
    """The one-Fire SqueezeNet's 8-bit file that keeps every weight, written before the dense
    layout: about a fifth of it was position gaps of 1 (docs/headline.md has every file)."""
    from squeezestudy.core.paths import OUTPUTS

    path = OUTPUTS / "deep_compression" / "squeezenet_fmnist-s0-dc-d1-8bit.sqdc"
    record = json.loads(path.with_suffix(".json").read_text())
    size = sqdc.repack(path, tmp_path / "dense.sqdc", expect=sqdc.expectation(record))
    assert size < 0.85 * path.stat().st_size
    header = sqdc.header_of((tmp_path / "dense.sqdc").read_bytes())
    assert all(layer.get("dense") for layer in header["layers"])
    before, after = sqdc.load(path), sqdc.load(tmp_path / "dense.sqdc")
    for a, b in zip(before.state_dict().values(), after.state_dict().values(), strict=True):
        assert torch.equal(a, b)
