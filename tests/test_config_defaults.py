"""TrainConfig is the one source of run defaults: the command line's training flags are made from
its fields, and notebook 05's parameters cell agrees with it."""

import ast
import dataclasses
import json

from squeezestudy import cli
from squeezestudy.core.paths import REPO_ROOT
from squeezestudy.training.config import TrainConfig

FIELDS = {f.name for f in dataclasses.fields(TrainConfig)}


def train_args(*argv):
    return cli.build_parser().parse_args(["train", *argv])


def test_every_field_has_a_flag_with_its_default():
    args = train_args()
    for name in FIELDS - {"model_kwargs"}:
        assert getattr(args, name) == getattr(TrainConfig(), name), name
    assert cli.config_from_args(args) == TrainConfig()


def test_flags_reach_the_config():
    args = train_args("--model", "squeezenet_design", "--model-kwargs", '{"sr": 0.25}', "--epochs", "3",
                      "--lr", "0.002", "--augment", "--no-channels-last", "--micro-batch", "64",
                      "--label-smoothing", "0.1", "--train-subset", "500")
    config = cli.config_from_args(args)
    assert config == TrainConfig(model="squeezenet_design", model_kwargs={"sr": 0.25}, epochs=3,
                                 lr=0.002, augment=True, channels_last=False, micro_batch=64,
                                 label_smoothing=0.1, train_subset=500)


def test_every_flag_has_help():
    text = cli.build_parser()._subparsers._group_actions[0].choices["train"].format_help()
    for name in FIELDS:
        assert "--" + name.replace("_", "-") in text
    assert all(f.metadata.get("help") for f in dataclasses.fields(TrainConfig))


def notebook_parameters(path):
    """The literal assignments of a notebook's `parameters` cell."""
    nb = json.loads(path.read_text())
    cell = next(c for c in nb["cells"] if "parameters" in c.get("metadata", {}).get("tags", []))
    values = {}
    for node in ast.parse("".join(cell["source"])).body:
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
            values[node.targets[0].id] = ast.literal_eval(node.value)
    return values


def test_notebook_05_parameters_match_train_config():
    params = notebook_parameters(REPO_ROOT / "notebooks" / "05_training.ipynb")
    shared = FIELDS & set(params)
    assert {"model", "epochs", "lr", "batch_size", "weight_decay", "micro_batch"} <= shared
    defaults = TrainConfig()
    differing = {name: (params[name], getattr(defaults, name)) for name in shared
                 if params[name] != getattr(defaults, name)}
    assert not differing, f"notebook 05 parameter vs TrainConfig default: {differing}"
