"""The headline's targets, study points and verdicts, on fake runs."""

import json
import re

import pandas as pd
import pytest

from squeezestudy.analysis import headline
from squeezestudy.analysis.results import collect_runs
from squeezestudy.training.config import TrainConfig


def fake_run(runs_dir, name, model, test_acc, seed, params, **model_kwargs):
    config = TrainConfig(model=model, model_kwargs=model_kwargs, seed=seed)
    metrics = {"model": model, "seed": seed, "precision": "fp32", "device": "cpu",
               "device_name": "cpu (x86_64, 1 threads, AVX2)", "epochs": 30, "params": params,
               "test_acc": test_acc, "val_acc": test_acc - 0.005, "train_acc": 0.95, "train_time_s": 60.0,
               "images_per_s": 1.0, "config": config.to_dict()}
    (runs_dir / name).mkdir(parents=True)
    (runs_dir / name / "metrics.json").write_text(json.dumps(metrics))


def make_runs(tmp_path, headline_accs):
    runs = tmp_path / "runs"
    for seed, acc in enumerate((0.9359, 0.9352)):
        fake_run(runs, f"alexnet-s{seed}", "alexnet", acc, seed, 24_744_650)
    for seed, acc in enumerate(headline_accs):
        fake_run(runs, f"headline-b96-s{seed}", "squeezenet_design", acc, seed, 411_322, bypass="simple")
    for seed, acc in enumerate((0.909, 0.913, 0.907)):
        fake_run(runs, f"squeezenet_fmnist-s{seed}", "squeezenet_fmnist", acc, seed, 18_010)
    return collect_runs(runs)


def test_budget_is_a_fiftieth_of_alexnet():
    assert headline.parameter_budget(24_744_650) == 494_893


def test_points_one_row_per_setting_in_study_order(tmp_path):
    points = headline.study_points(make_runs(tmp_path, (0.925, 0.927, 0.926)))
    assert list(points.index) == ["alexnet", "headline-b96", "squeezenet_fmnist"]
    assert points.loc["headline-b96", "family"] == "headline SqueezeNet"
    assert points.loc["alexnet", "fp32_bytes"] == 4 * 24_744_650
    assert points.loc["headline-b96", "seeds"] == 3
    assert abs(points.loc["headline-b96", "test_acc_mean"] - 0.926) < 1e-9


def test_verdicts_follow_the_evidence(tmp_path):
    runs = make_runs(tmp_path, (0.925, 0.927, 0.926))
    lines = headline.verdicts(headline.seeds(headline.HEADLINE_RUNS, runs),
                              headline.seeds(headline.ALEXNET_RUNS, runs), 494_893)
    assert lines[0].startswith("parameters: 411,322 of a budget of 494,893") and "within it" in lines[0]
    assert "target 93.0%: mean not reached" in lines[1]
    assert "distinguishable from zero" in lines[2] and lines[2].startswith("headline SqueezeNet − 93.0%")
    assert "lower than AlexNet-112" in lines[3]


def test_one_seed_says_so(tmp_path):
    runs = make_runs(tmp_path, (0.931,))
    lines = headline.verdicts(headline.seeds(headline.HEADLINE_RUNS, runs),
                              headline.seeds(headline.ALEXNET_RUNS, runs), 494_893)
    assert "mean reached (only 1 seed(s) of 3)" in lines[1]
    assert "untested" in lines[2]


def test_recipe_trials_judge_on_validation_and_skip_unfinished_recipes():
    first, second = headline.TRIAL_RUNS[:2]
    runs = pd.DataFrame({"run": [first, second], "val_acc": [0.90, 0.91], "train_acc": [0.99, 0.93],
                         "test_acc": [0.92, 0.905]})
    histories = pd.DataFrame({"run": [first] * 3 + [second] * 3, "epoch": [1, 2, 3] * 2,
                              "val_acc": [0.8, 0.905, 0.90, 0.8, 0.9, 0.91], "test_loss": [0.3] * 6,
                              "val_loss": [0.5, 0.25, 0.5, 0.5, 0.4, 0.3]})
    trials = headline.recipe_trials(runs, histories)
    assert trials.run.tolist() == [first, second]
    assert trials.val_loss_min_epoch.tolist() == [2, 3]
    assert trials.val_loss_rise.tolist() == pytest.approx([1.0, 0.0])
    assert trials.val_acc_best.tolist() == [0.905, 0.91]
    # the test accuracy favours the first recipe; the choice follows validation
    choice = headline.recipe_choice(trials)
    assert "prefers the regularised" in choice and "by 1.00 points" in choice
    assert headline.chosen_runs(trials) == headline.REGULARISED_RUNS
    only_first = headline.recipe_trials(runs[runs.run == first], histories)
    assert only_first.run.tolist() == [first]
    assert "nothing to choose" in headline.recipe_choice(only_first)
    assert headline.chosen_runs(only_first) == headline.HEADLINE_RUNS
    with pytest.raises(ValueError, match="no recipe has finished"):
        headline.chosen_runs(only_first.iloc[:0])


def test_seed_run_names_one_seed_of_a_pattern():
    assert headline.seed_run(headline.REGULARISED_RUNS) == "headline-b96aug-s0"
    assert headline.seed_run(headline.REGULARISED_60_RUNS, 2) == "headline-b96aug60-s2"
    assert re.fullmatch(headline.REGULARISED_60_RUNS, headline.seed_run(headline.REGULARISED_60_RUNS))
    assert not re.fullmatch(headline.REGULARISED_RUNS, headline.seed_run(headline.REGULARISED_60_RUNS))
    assert headline.seeds_pattern("headline-b96aug60-s2") == headline.REGULARISED_60_RUNS
    assert headline.seeds_pattern("headline-b96aug") == headline.REGULARISED_RUNS


def test_every_recipe_tried_is_in_the_manifest_with_three_seeds():
    from squeezestudy.batch.manifest import expand, load_manifest

    names = {run.name for run in expand(load_manifest(), "headline")}
    for pattern in (*headline.RECIPES, headline.BATCH_NORM_RUNS):
        assert {headline.seed_run(pattern, seed) for seed in range(3)} <= names, pattern


def test_the_chosen_recipe_is_tested_against_every_other_recipe_with_seeds():
    runs = pd.DataFrame({"run": ["headline-b96-s0", "headline-b96-s1", "headline-b96aug-s0",
                                 "headline-b96aug-s1", "headline-b96aug-s2", "headline-b96aug60-s0"],
                         "test_acc": [0.915, 0.917, 0.92, 0.922, 0.921, 0.93]})
    found = headline.recipe_comparisons(headline.REGULARISED_RUNS, runs)
    assert [(c.label_a, c.label_b) for c in found] == [("chosen (regularised recipe)", "plain recipe")]
    assert found[0].n_a == 3 and found[0].n_b == 2 and found[0].diff == pytest.approx(0.005)
    assert headline.recipe_label(headline.REGULARISED_60_RUNS) == "60-epoch regularised recipe"


def test_the_500x_search_takes_the_smallest_file_under_the_line_within_half_a_point():
    import pandas as pd

    records = pd.DataFrame({"name": ["a", "b", "c", "d"], "file_bytes": [200_354, 190_000, 185_000, 230_000],
                            "val_change": [-0.58, -0.40, -0.70, -0.20]})
    table, chosen, verdict = headline.file_search(records, 197_968)
    assert chosen["name"] == "b" and "chosen on validation: b, 190,000 bytes (-0.40 points)" in verdict
    assert table.under_line.tolist() == [False, True, True, False]
    assert table.within_rule.tolist() == [False, True, False, True]
    table, chosen, verdict = headline.file_search(records.drop(index=1), 197_968)
    assert chosen is None and "500x is not reached" in verdict and "d, 230,000 bytes (430x, -0.20" in verdict
    table, chosen, verdict = headline.file_search(records.assign(val_change=-1.0), 197_968)
    assert chosen is None and "no setting is within 0.5 points" in verdict
    # exactly 0.5 points (25 of 5,000 validation images) is within, whatever the float rounding
    exact = pd.DataFrame({"name": ["e"], "file_bytes": [188_879], "val_change": [100 * (0.9230 - 0.9280)]})
    assert exact.val_change[0] < -0.5  # as the float gives it
    table, chosen, verdict = headline.file_search(exact, 197_968, next_stage="stage D follows")
    assert chosen["name"] == "e" and verdict.endswith("stage D follows")


def test_the_third_rounds_files_hold_only_with_every_file_under_and_the_interval_within():
    import pandas as pd

    from squeezestudy.analysis import headline

    def files(sizes, changes):
        return pd.DataFrame({"file_bytes": sizes, "uncompressed_test_acc": [0.93] * 3,
                             "test_acc": [0.93 + c / 100 for c in changes]})

    goal = 197_968.4
    _, change, verdict = headline.files_hold(files([195_000, 195_100, 194_900], [-0.1, -0.2, -0.15]), goal)
    assert change.n_a == 3 and verdict.endswith("500x holds")
    _, _, verdict = headline.files_hold(files([195_000, 198_000, 194_900], [-0.1, -0.2, -0.15]), goal)
    assert "not all at most 197,968" in verdict and verdict.endswith("does not hold")
    _, change, verdict = headline.files_hold(files([195_000, 195_100, 194_900], [0.1, -0.6, -0.3]), goal)
    assert change.low < -0.005 and verdict.endswith("is not shown")  # mean -0.27, interval below -0.5
