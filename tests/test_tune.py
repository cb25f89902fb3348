"""The tuning pass: measured per-machine defaults, cached by what the machine is, used by fit for
settings left to auto. Speeds are faked where the choice logic is tested: no timed assertions."""

import dataclasses
import json

import pytest
import torch

from squeezestudy.speed import readings, tune
from squeezestudy.training import settings
from squeezestudy.training.config import TrainConfig, has_batch_statistics
from squeezestudy.training.loop import fit
from squeezestudy.training.settings import resolve_defaults

CPU = torch.device("cpu")


@pytest.fixture
def cache(tmp_path, monkeypatch):
    path = tmp_path / "tuning.json"
    monkeypatch.setenv(settings.CACHE_ENV, str(path))
    return path


def make_quiet(monkeypatch):
    """The machine as quiet, whatever runs beside the tests: the speeds are faked anyway."""
    monkeypatch.setattr(tune, "check_quiet", lambda: None)
    monkeypatch.setattr(tune.CpuWatch, "others", lambda self: 0.0)


def write_entry(path, config, choice):
    key = settings.model_key(config.model, config.batch_size, config.resolved_image_size())
    path.write_text(json.dumps({settings.machine_key(CPU): {key: {"choice": dataclasses.asdict(choice)}}}))


def test_untuned_machine_uses_the_defaults_of_its_kind(cache, cpu_kind):
    """bf16 where the CPU runs it natively, for the models whose bf16 accuracy was checked, and then
    whole batches (half the bytes); fp32 with the model's micro-batch elsewhere (whole batches for
    the one-Fire SqueezeNet since its ReLU runs after the pool)."""
    assert not cache.exists()
    threads = torch.get_num_threads()
    choice = resolve_defaults(TrainConfig(model="squeezenet_fmnist"), CPU)
    native = cpu_kind.native_bf16
    assert choice == settings.Choice("bf16" if native else "fp32", True, 0, threads)
    # SqueezeNet v1.0 at 224x224 keeps its micro-batches in fp32 (in bf16, where native: whole)
    reference = resolve_defaults(TrainConfig(model="squeezenet1_0"), CPU)
    assert reference.micro_batch == (0 if reference.precision == "bf16" else 16)
    # LeNet: fp32 where its compiled kernels are built (faster than bf16), else as the others
    assert resolve_defaults(TrainConfig(model="lenet"), CPU) == settings.Choice(
        "bf16" if native and not settings.kernels.available() else "fp32", True, 0, threads)
    # the headline network's bf16 accuracy was checked on validation (docs/headline-search.md)
    assert resolve_defaults(TrainConfig(model="squeezenet_design"), CPU).precision == (
        "bf16" if native else "fp32")
    # the note's Keras sketch was never checked and is not a reference network: fp32 everywhere
    assert resolve_defaults(TrainConfig(model="squeezenet_sketch"), CPU).precision == "fp32"
    assert resolve_defaults(TrainConfig(model="alexnet"), CPU).precision == ("bf16" if native else "fp32")


@pytest.mark.parametrize("built", [True, False])
def test_lenet_default_is_fp32_where_its_kernels_are_built(cache, cpu_kind, monkeypatch, built):
    """On every CPU kind: fp32 where the kernels are built; where they are not, bf16 on a CPU that
    runs it natively, as for the other checked models. The other models do not depend on them."""
    monkeypatch.setattr(settings.kernels, "available", lambda: built)
    lenet = resolve_defaults(TrainConfig(model="lenet"), CPU)
    assert lenet.precision == ("fp32" if built or not cpu_kind.native_bf16 else "bf16")
    assert lenet.micro_batch == 0
    fire = resolve_defaults(TrainConfig(model="squeezenet_fmnist"), CPU)
    assert fire.precision == ("bf16" if cpu_kind.native_bf16 else "fp32")


def test_tuned_choice_fills_only_what_the_config_leaves_to_auto(cache):
    config = TrainConfig(model="lenet")
    write_entry(cache, config, settings.Choice("fp32", False, 64, 1))
    assert resolve_defaults(config, CPU) == settings.Choice("fp32", False, 64, 1)
    explicit = dataclasses.replace(config, channels_last=True, micro_batch=0)
    assert resolve_defaults(explicit, CPU) == settings.Choice("fp32", True, 0, 1)
    # another batch size or another machine is not covered by the entry
    assert resolve_defaults(dataclasses.replace(config, batch_size=128), CPU).micro_batch == 0
    other = json.loads(cache.read_text())
    cache.write_text(json.dumps({"cpu | another machine": next(iter(other.values()))}))
    assert resolve_defaults(config, CPU).micro_batch == 0


@pytest.mark.parametrize("content", ["{not json", "[1, 2]",
                                     '{"%s": {"lenet | batch 256 | 28x28": {"choice": {}}}}'])
def test_damaged_cache_is_ignored(cache, content):
    cache.write_text(content.replace("%s", settings.machine_key(CPU)))
    assert resolve_defaults(TrainConfig(model="lenet"), CPU).micro_batch == 0


def test_coordinate_descent_keeps_the_fastest_and_the_cache_keeps_other_machines(cache, monkeypatch,
                                                                                 cpu_kind):
    # bf16 is timed first where the CPU runs it natively (lenet's bf16 accuracy was checked), and
    # is slower here so that the rest of the walk is the same on every kind; LeNet as where its
    # compiled kernels are not built (bf16 its default there, where native)
    monkeypatch.setattr(settings.kernels, "available", lambda: False)
    speeds = {("fp32", True, 0): 100, ("fp32", False, 0): 80, ("fp32", True, 128): 130,
              ("fp32", True, 64): 120, ("bf16", True, 0): 60}
    threads = torch.get_num_threads()
    together = []

    def fake_measure(model, choices, dataset, device, batch_size, seconds):
        together.append(choices)
        rates = [speeds[(c.precision, c.channels_last, c.micro_batch)] + (5 if c.threads == 1 else 0)
                 for c in choices]  # one thread a little faster
        return [[rate - 1, rate, rate + 1] for rate in rates]  # three rounds, a narrow scatter

    monkeypatch.setattr(tune, "measure", fake_measure)
    cache.write_text(json.dumps({"cpu | another machine": {"x": {"choice": {}}}}))
    results = tune.tune(["lenet"], CPU, dataset=None, echo=lambda *a: None, require_quiet=False)
    entry = results["lenet | batch 256 | 28x28"]
    assert entry["choice"] == {"precision": "fp32", "channels_last": True, "micro_batch": 128,
                               "threads": 1 if threads > 1 else threads}
    native = cpu_kind.native_bf16  # the default is bf16 there, and slower in this fake
    assert entry["default"]["threads"] == threads
    assert entry["default"]["precision"] == ("bf16" if native else "fp32")
    # the speed-up is measured against the default in the same rounds (the last group)
    assert entry["default_images_per_s"] == (60 if native else 100) + 5 * (threads == 1)
    assert entry["speedup"] == pytest.approx(entry["images_per_s"] / entry["default_images_per_s"])
    # every axis with more than one value timed its values together, the current one included,
    # then the choice against the default
    axes = (["precision"] if native else []) + ["channels_last", "micro_batch"]
    sizes = ([2] if native else []) + [2, 3]
    if threads > 1:
        axes.append("threads")
        sizes.append(len({threads, max(1, threads // 2), 1}))
    assert [len(c) for c in together] == sizes + [2]
    assert [g["axis"] for g in entry["groups"]] == axes + ["confirm"]
    assert entry["groups"][0]["rates"][0]["rounds"] == [99, 100, 101]  # fp32, channels_last, whole
    stored = json.loads(cache.read_text())
    assert set(stored) == {"cpu | another machine", settings.machine_key(CPU)}
    assert resolve_defaults(TrainConfig(model="lenet"), CPU).micro_batch == 128


def test_native_bf16_is_chosen_where_it_is_faster(cache, monkeypatch):
    """On a CPU with native bf16 the tuning pass keeps bf16 when every round says it is faster."""
    from squeezestudy.core import machine

    def fake_measure(model, choices, dataset, device, batch_size, seconds):
        return [[r - 1, r, r + 1] for r in (300 if c.precision == "bf16" else 100 for c in choices)]

    monkeypatch.setattr(tune, "measure", fake_measure)
    with machine.simulate("amx"):
        assert tune.tune_model("lenet", None, CPU, echo=lambda *a: None)["choice"]["precision"] == "bf16"
    with machine.simulate("avx2"):  # emulated bf16 is never a candidate
        assert tune.tune_model("lenet", None, CPU, echo=lambda *a: None)["choice"]["precision"] == "fp32"


def test_a_gain_within_the_scatter_of_the_rounds_keeps_the_current_setting(cache, monkeypatch):
    # channels_last off is faster by its median but its rounds overlap the current one's;
    # micro-batch 128 is faster in every round: only the second moves the choice
    rounds = {(True, 0): [95, 100, 105], (False, 0): [90, 108, 120], (True, 128): [106, 110, 112],
              (True, 64): [50, 51, 52]}

    def fake_measure(model, choices, dataset, device, batch_size, seconds):
        return [[r - (60 if c.threads == 1 else 0) for r in rounds[(c.channels_last, c.micro_batch)]]
                for c in choices]

    monkeypatch.setattr(tune, "measure", fake_measure)
    entry = tune.tune_model("lenet", None, CPU, echo=lambda *a: None)
    assert entry["choice"]["channels_last"] is True and entry["choice"]["micro_batch"] == 128
    assert entry["images_per_s"] == 110 and entry["default_images_per_s"] == 100


def test_a_walk_whose_confirmation_fails_keeps_the_default(cache, monkeypatch):
    """The walk moves to micro-batch 128 on every round, but timed once more against the default
    it no longer wins every round: the default is kept, and where the walk ended is recorded."""
    def fake_measure(model, choices, dataset, device, batch_size, seconds):
        confirming = sorted(c.micro_batch for c in choices) == [0, 128]  # the default and the walk's end

        def rounds(c):
            if c.micro_batch == 128:
                return [99, 104, 109] if confirming else [120, 121, 122]
            return [100, 101, 102] if c.threads == torch.get_num_threads() else [50, 51, 52]
        return [rounds(c) for c in choices]

    monkeypatch.setattr(tune, "measure", fake_measure)
    from squeezestudy.core import machine

    with machine.simulate("avx2"):  # fp32 default: no precision axis
        entry = tune.tune_model("lenet", None, CPU, echo=lambda *a: None)
    assert entry["walked"]["micro_batch"] == 128 and entry["groups"][-1]["axis"] == "confirm"
    assert entry["choice"] == entry["default"] and entry["speedup"] == 1


def test_bf16_is_a_candidate_only_where_native_and_checked(cpu_kind):
    base = settings.Choice("fp32", True, 0, 2)

    def precisions(model):
        return [c.precision for c in tune.candidates_along("precision", base, model, CPU, 256)]

    assert precisions("lenet") == (["fp32", "bf16"] if cpu_kind.native_bf16 else ["fp32"])
    assert precisions("squeezenet_sketch") == ["fp32"]  # its bf16 accuracy was never checked


def test_bf16_checked_models_passed_notebook_06s_check():
    """The small models' bf16 allowance rests on outputs/recipes: paired seed-0 runs in bf16 and
    fp32 whose mean difference is within 0.3 points."""
    from squeezestudy.analysis.results import collect_runs
    from squeezestudy.core.paths import OUTPUTS
    from squeezestudy.models import REGISTRY

    runs = collect_runs(OUTPUTS / "recipes")
    for model in ("lenet", "squeezenet_fmnist"):
        assert REGISTRY[model].bf16_checked
        grid = runs[runs.run.str.startswith(f"{model}-g")]
        grid = grid.assign(point=grid.run.str.rsplit("-", n=1).str[0])
        pairs = grid.pivot(index="point", columns="precision", values="test_acc")
        assert len(pairs) == 4 and abs(100 * (pairs.bf16 - pairs.fp32).mean()) <= 0.3


def test_the_headline_networks_bf16_default_rests_on_its_validation_check():
    """squeezenet_design's bf16 allowance: its bf16 run (sealed, validation only) within 0.3 points
    of the same recipe's fp32 seed 0 (the plan in docs/headline-search.md)."""
    from squeezestudy.core.paths import RUNS_DIR
    from squeezestudy.models import REGISTRY
    from squeezestudy.training.rundir import read_metrics

    bf16 = read_metrics(RUNS_DIR / "headline2-bf16-s0" / "metrics.json")
    fp32 = read_metrics(RUNS_DIR / "headline-b96aug60-s0" / "metrics.json")
    assert (bf16["precision"], fp32["precision"]) == ("bf16", "fp32")
    assert bf16["config"]["model"] == fp32["config"]["model"] == "squeezenet_design"
    defaults = dataclasses.asdict(TrainConfig(model="squeezenet_design"))  # keys added since: defaults

    def recipe(metrics):
        return {k: v for k, v in {**defaults, **metrics["config"]}.items()
                if k not in ("precision", "sealed", "ema", "run_name", "output_dir")}

    assert recipe(bf16) == recipe(fp32)
    assert REGISTRY["squeezenet_design"].bf16_checked
    assert abs(100 * (bf16["val_acc"] - fp32["val_acc"])) <= 0.3
    # the faster pipeline (models.dropout, the fused AdamW): the same configuration, trained by it
    fast = read_metrics(RUNS_DIR / "headline2-fast-s0" / "metrics.json")
    assert fast["precision"] == "bf16" and fast["sealed"] and fast["test_acc"] is None
    assert recipe(fast) == recipe(fp32)
    assert abs(100 * (fast["val_acc"] - fp32["val_acc"])) <= 0.3


def test_fit_applies_tuned_threads_and_restores_them(cache, small_fashion_mnist):
    config = TrainConfig(model="lenet", epochs=1, train_subset=300, batch_size=100, device="cpu")
    write_entry(cache, config, settings.Choice("fp32", True, 0, 1))
    before = torch.get_num_threads()
    result = fit(config, small_fashion_mnist, quiet=True)
    assert "1 threads" in result.metrics["device_name"] and result.metrics["micro_batch"] == 0
    assert torch.get_num_threads() == before


def test_real_measurement_of_a_tiny_run(small_fashion_mnist, cache):
    """Measured for real on this machine, whatever its kind (the precision axis where it has
    native bf16)."""
    from squeezestudy.core import machine

    entry = tune.tune_model("lenet", small_fashion_mnist, CPU, batch_size=32, seconds=0.03,
                            echo=lambda *a: None)
    axes = (["precision"] if machine.current().native_bf16 else []) + ["channels_last",
                                                                       "micro_batch", "threads"]
    timed = [g["axis"] for g in entry["groups"] if g["axis"] != "confirm"]
    assert timed == axes[:len(timed)] and len(timed) >= 2
    moved = entry["choice"] != entry["default"]
    walked = entry["walked"] != entry["default"]  # then timed against the default at the end,
    assert [g["axis"] for g in entry["groups"]].count("confirm") == int(walked)
    assert not moved or entry["choice"] == entry["walked"]  # and kept only if it won again
    for group in entry["groups"]:  # each group holds its current setting and a rate for each value
        rates = {tuple(r[k] for k in settings.SETTINGS): r["images_per_s"] for r in group["rates"]}
        assert all(rate > 0 for rate in rates.values())
        assert tuple(group["current"][k] for k in settings.SETTINGS) in rates
    assert entry["default_images_per_s"] > 0
    assert entry["speedup"] > 1 if moved else entry["speedup"] == 1
    assert isinstance(entry["quiet"], bool) and (entry["quiet"] or "spread" in entry["why"])


def test_bench_reports_whether_the_default_is_within_5_percent():
    def record(label, ips, rounds):
        return readings.Record(model="lenet", pipeline="project", precision="fp32", settings={},
                            images_per_s=ips, label=label, repeats=rounds)

    best = record("channels_last off", 100, [98, 100, 102])
    batch = record("batch 512", 200, [200, 200, 200])  # changes the recipe: never the best
    (verdict,) = readings.default_verdicts([record("default", 96, [95, 96, 97]), best, batch])
    assert verdict["best"] == "channels_last off" and verdict["within_5_percent"] == "yes"
    # 10% slower by the medians, and the interval of the best's speed-up lies above 1 / 0.95
    (verdict,) = readings.default_verdicts([record("default", 90, [89, 90, 91]), best, batch])
    assert verdict["within_5_percent"] == "no"
    # 10% slower by the medians, but the rounds overlap: this machine could not tell
    (verdict,) = readings.default_verdicts([record("default", 90, [80, 90, 99]), best, batch])
    assert verdict["within_5_percent"] == "not resolved"


@pytest.mark.parametrize("argv, expected", [
    (["--models", "vgg"], "unknown model 'vgg'; known models"),
    (["--seconds", "0"], "--seconds must be positive"),
])
def test_tune_usage_errors_measure_nothing(argv, expected, cache, capsys, monkeypatch):
    from squeezestudy import cli

    monkeypatch.setattr(tune, "tune", lambda *a, **k: pytest.fail("measured despite a usage error"))
    monkeypatch.setattr("squeezestudy.data.load", lambda *a, **k: None)
    assert cli.main(["tune", *argv]) == 2
    assert expected in capsys.readouterr().err


def test_tune_if_untuned_skips_a_tuned_machine(cache, capsys, monkeypatch):
    from squeezestudy import cli

    write_entry(cache, TrainConfig(model="lenet"), settings.Choice("fp32", True, 0, 1))
    monkeypatch.setattr(tune, "tune", lambda *a, **k: pytest.fail("retuned a tuned machine"))
    assert cli.main(["tune", "--if-untuned", "--models", "lenet"]) == 0
    assert "tuned already" in capsys.readouterr().out


def test_batch_norm_models_train_on_whole_batches(cache):
    config = TrainConfig(model="squeezenet_design", model_kwargs={"squeeze_norm": True})
    write_entry(cache, config, settings.Choice("fp32", True, 128, 2))  # a choice for the model without it
    assert resolve_defaults(config, CPU).micro_batch == 0
    with pytest.raises(ValueError, match="micro_batch=64 with batch norm in the model"):
        resolve_defaults(dataclasses.replace(config, micro_batch=64), CPU)
    assert resolve_defaults(dataclasses.replace(config, model_kwargs={}), CPU).micro_batch == 128
    assert has_batch_statistics(config) and not has_batch_statistics(TrainConfig(model="lenet"))


# --- a cache that cannot be used is one line, never a traceback or a wrong setting (issue 24) ------

@pytest.mark.parametrize("bad, reason", [
    ({"threads": 0}, "threads 0 is not a whole number from 1 to the"),
    ({"threads": 999}, "threads 999 is not a whole number from 1 to the"),
    ({"micro_batch": "lots"}, "micro_batch 'lots' is not a whole number"),
    ({"precision": "fp8"}, "precision 'fp8' is not fp32 or bf16"),
    ({"channels_last": "yes"}, "channels_last 'yes' is not true or false"),
])
def test_an_unusable_cache_entry_is_ignored_with_one_line(cache, capsys, bad, reason):
    config = TrainConfig(model="lenet")
    good = dataclasses.asdict(settings.Choice("fp32", False, 64, 1))
    key = settings.model_key(config.model, config.batch_size, config.resolved_image_size())
    cache.write_text(json.dumps({settings.machine_key(CPU): {key: {"choice": {**good, **bad},
                                                                    "default": good}}}))
    assert resolve_defaults(config, CPU) == settings.static_choice("lenet", CPU)
    err = capsys.readouterr().err
    assert f"ignoring the tuning cache's entry for {key} ({reason}" in err and "squeezestudy tune" in err
    from squeezestudy import cli

    assert cli.main(["tune", "--show", "--models", "lenet"]) == 0
    out = capsys.readouterr()
    assert f"{key}: unusable ({reason}" in out.out and "Traceback" not in out.err


def test_an_entry_of_the_wrong_type_is_ignored(cache, capsys):
    key = settings.model_key("lenet", 256, 28)
    cache.write_text(json.dumps({settings.machine_key(CPU): {key: "fast"}}))
    assert resolve_defaults(TrainConfig(model="lenet"), CPU) == settings.static_choice("lenet", CPU)
    assert "it is not a choice of precision" in capsys.readouterr().err


def test_a_cache_that_cannot_be_written_stops_tuning_before_it_measures(tmp_path, monkeypatch, capsys):
    """It measured for 40 s, then failed naming a temporary file, the results lost."""
    from squeezestudy import cli

    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")  # the cache's folder is a file: unwritable for root too
    monkeypatch.setenv(settings.CACHE_ENV, str(blocker / "tuning.json"))
    monkeypatch.setattr(tune, "tune", lambda *a, **k: pytest.fail("measured into a cache it cannot write"))
    assert cli.main(["tune", "--models", "lenet"]) == 1
    err = capsys.readouterr().err
    assert f"the tuning cache {blocker / 'tuning.json'} cannot be written" in err and "Traceback" not in err


def test_a_busy_machine_is_not_tuned(cache, monkeypatch, capsys):
    """A load average above MAX_LOAD stops the pass before it measures, with one line; the
    cache is left as it was."""
    from squeezestudy import cli

    monkeypatch.setattr(tune, "busy_cores", lambda: 1.9)
    monkeypatch.setattr(tune, "measure", lambda *a, **k: pytest.fail("measured on a busy machine"))
    monkeypatch.setattr("squeezestudy.data.fashion_mnist.load", lambda *a, **k: None)
    assert cli.main(["tune", "--models", "lenet"]) == 1
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and "kept 1.9 of its" in out[0] and "nothing is cached" in out[0]
    assert not cache.exists()


def test_rounds_that_spread_are_not_cached(cache, monkeypatch):
    """The machine's speed moved while it measured (the default's rounds 40% apart): the model
    gets one line saying so and no cache entry."""
    make_quiet(monkeypatch)
    monkeypatch.setattr(tune, "measure", lambda model, choices, *a: [[70, 100, 98] for _ in choices])
    lines = []
    assert tune.tune(["lenet"], CPU, dataset=None, echo=lines.append) == {}
    assert any(line.startswith("lenet: not cached: the default's rounds spread 43%") for line in lines)
    assert not cache.exists()


def test_the_pass_prints_one_line_a_model(cache, monkeypatch):
    make_quiet(monkeypatch)
    monkeypatch.setattr(tune, "measure", lambda model, choices, *a: [
        [r - 1, r, r + 1] for r in (130 if c.micro_batch == 128 else 100 for c in choices)])
    lines = []
    tune.tune(["lenet", "squeezenet_fmnist"], CPU, dataset=None, echo=lines.append)
    assert len(lines) == 4  # the machine, a line for each model, the time it took
    assert "micro-batch 128" in lines[1] and "1.30x the static default" in lines[1]


def test_make_study_tunes_only_where_it_can_save_more_than_it_costs(cache, monkeypatch):
    """With the pending epochs of `make study`: 2 epochs of LeNet at 1,000 img/s take 110 s, and a
    tenth of that is less than the tuning it would cost; 200 epochs are worth tuning."""
    make_quiet(monkeypatch)
    monkeypatch.setattr(tune, "measure", lambda model, choices, *a: [[999, 1000, 1001] for _ in choices])
    lines = []
    assert tune.tune(["lenet"], CPU, dataset=None, echo=lines.append, pending_epochs={"lenet": 2},
                     budget_s=30) == {}
    assert any("lenet: not tuned" in line and "at most 10%" in line for line in lines)
    assert tune.tune(["lenet"], CPU, dataset=None, echo=lines.append, pending_epochs={"lenet": 200},
                     budget_s=30)


def test_tuning_stops_trying_settings_at_its_deadline(cache, monkeypatch):
    clock = {"now": 0.0}
    monkeypatch.setattr(tune.time, "monotonic", lambda: clock["now"])

    def slow_measure(model, choices, *a):
        clock["now"] += 50  # every group takes 50 s
        return [[99, 100, 101] for _ in choices]

    monkeypatch.setattr(tune, "measure", slow_measure)
    entry = tune.tune_model("lenet", None, CPU, echo=lambda *a: None, deadline=60)
    assert len(entry["groups"]) == 2  # the third axis would start past the deadline


def test_study_models_tune_within_the_budget():
    """What `make study` trains, and nothing it does not (SqueezeNet v1.0 at 224: the benchmark's)."""
    assert set(tune.DEFAULT_MODELS) == {"squeezenet_fmnist", "lenet", "squeezenet_design", "alexnet"}
    assert tune.BUDGET_S <= 120


def test_busy_cores_sees_the_processes_running_now():
    """Measured for real: the training runs or tests beside it, or none; never negative, never
    more than the machine has."""
    import os

    assert 0 <= tune.busy_cores(0.5) <= 1.1 * (os.cpu_count() or 1) + 0.1  # /proc/stat counts in ticks


def test_other_processes_cpu_time_is_the_machines_less_this_ones(monkeypatch):
    """Over 10 s the machine was busy 25 core-seconds, this process 15 (its threads included):
    other processes kept 1.0 core busy; this process's own work never counts against the quiet."""
    clock = {"now": 0.0, "busy": 100.0, "own": 3.0}
    monkeypatch.setattr(tune.time, "monotonic", lambda: clock["now"])
    monkeypatch.setattr(tune.CpuWatch, "_busy", staticmethod(lambda: clock["busy"]))
    monkeypatch.setattr(tune.CpuWatch, "_own", staticmethod(lambda: clock["own"]))
    watch = tune.CpuWatch()
    clock.update(now=10.0, busy=125.0, own=18.0)
    assert watch.others() == pytest.approx(1.0)
    clock.update(busy=133.0, own=36.0)  # all of it this process's: nobody else
    assert watch.others() == 0.0


def test_load_from_other_processes_during_the_pass_is_not_cached(cache, monkeypatch):
    make_quiet(monkeypatch)
    monkeypatch.setattr(tune.CpuWatch, "others", lambda self: 1.2)
    monkeypatch.setattr(tune, "measure", lambda model, choices, *a: [[99, 100, 101] for _ in choices])
    lines = []
    assert tune.tune(["lenet"], CPU, dataset=None, echo=lines.append) == {}
    assert "lenet: not cached: other processes kept 1.2 cores busy while it was measured" in lines
