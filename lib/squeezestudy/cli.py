"""Command line: `squeezestudy data | train | batch | report | tune | bench`."""

from __future__ import annotations

import argparse
import json
import signal
import sys
from pathlib import Path

from squeezestudy.core import paths
from squeezestudy.core.paths import display_path


class UsageError(ValueError):
    """A command-line value that cannot be used (exit status 2)."""


def _cmd_data(args) -> int:
    from squeezestudy.data import fashion_mnist as data

    ds = data.load(args.dir)
    mean, std = ds.mean_std()
    print(f"Fashion-MNIST from {ds.source}")
    print(f"  train {len(ds.train):,}  val {len(ds.val):,}  test {len(ds.test):,}")
    print(f"  SHA-256 verified: {', '.join(ds.verified) or 'no SHA256SUMS file next to the data'}")
    print(f"  train mean {mean:.4f}  std {std:.4f}")
    return 0


def _parse_model_kwargs(text: str) -> dict:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise UsageError(f"--model-kwargs is not valid JSON ({err}); give a JSON object, "
                         """e.g. --model-kwargs '{"sr": 0.25}'""") from None
    if not isinstance(value, dict):
        raise UsageError(f"--model-kwargs must be a JSON object of builder arguments, got "
                         f"{type(value).__name__} {text!r}; e.g. --model-kwargs '{{\"sr\": 0.25}}'")
    return value


_FLAG_TYPES = {"int": int, "int | None": int, "float": float, "str": str}


def add_config_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per TrainConfig field, with its default and help text (TrainConfig is the one
    source of run defaults); --model-kwargs takes JSON."""
    import dataclasses

    from squeezestudy.training.config import TrainConfig

    for f in dataclasses.fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        default = f.default_factory() if f.default is dataclasses.MISSING else f.default
        help_text = f.metadata["help"] + ("" if default is None else " (default: %(default)s)")
        if f.type in ("bool", "bool | None"):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=default,
                                help=help_text)
        elif f.type == "dict":
            parser.add_argument(flag, default=json.dumps(default), metavar="JSON",
                                help=help_text + """, e.g. '{"sr": 0.25}'""")
        else:
            parser.add_argument(flag, type=_FLAG_TYPES[f.type], default=default, help=help_text)


def config_from_args(args: argparse.Namespace):
    import dataclasses

    from squeezestudy.training.config import TrainConfig

    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)}
    return TrainConfig(**{**values, "model_kwargs": _parse_model_kwargs(args.model_kwargs)})


class _LazyParser(argparse.ArgumentParser):
    """A subcommand whose flags are added when it is used: `train`'s come from TrainConfig, whose
    module imports torch, which the other commands (a batch's start) should not wait for."""

    def __init__(self, *args, add_flags=None, **kwargs):
        super().__init__(*args, **kwargs)
        self._add_flags = add_flags

    def _populate(self) -> None:
        if self._add_flags is not None:
            add_flags, self._add_flags = self._add_flags, None
            add_flags(self)

    def parse_known_args(self, args=None, namespace=None):
        self._populate()
        return super().parse_known_args(args, namespace)

    def format_help(self) -> str:
        self._populate()
        return super().format_help()


def _train_flags(p: argparse.ArgumentParser) -> None:
    add_config_flags(p)
    p.add_argument("--data-dir", help="directory of the four IDX files (default: "
                                      "$FASHION_MNIST_DIR, data/FashionMNIST/raw, else download)")
    p.add_argument("--name", help="run name under outputs/runs/ (default: <model>-s<seed>)")
    p.add_argument("--out", help="run directory (overrides --name)")
    p.add_argument("--resume", action="store_true", help="continue from the run's last checkpoint")
    p.add_argument("--force", action="store_true",
                   help="start over in a run directory that already holds a run (deletes it)")
    p.add_argument("--quiet", action="store_true")


def _cmd_train(args) -> int:
    from squeezestudy.core.paths import RUNS_DIR
    from squeezestudy.training.loop import fit

    config = config_from_args(args)
    out = Path(args.out) if args.out else RUNS_DIR / (args.name or f"{args.model}-s{args.seed}")
    result = fit(config, out_dir=out, resume=args.resume, force=args.force, quiet=args.quiet,
                 data_dir=args.data_dir)
    m = result.metrics
    test = "sealed" if m["test_acc"] is None else f"{m['test_acc']:.4f}"
    print(f"{m['model']}: test {test}  val {m['val_acc']:.4f}  "
          f"{m['train_time_s']:.0f}s  {m['images_per_s']:,.0f} img/s  -> {display_path(out)}")
    return 0


def _cmd_batch(args) -> int:
    from squeezestudy.batch.runner import BatchInterrupted, run_batch, summary_table

    gpus = args.gpus.split(",") if args.gpus is not None else None
    try:
        outcomes = run_batch(args.profile, only=args.only, force=args.force, jobs=args.jobs,
                             manifest_path=args.manifest, kernel=args.kernel, dry_run=args.dry_run,
                             gpus=gpus, scheduler=args.scheduler, scheduler_file=args.scheduler_file)
    except BatchInterrupted as stopped:
        print()
        print(summary_table(stopped.outcomes))
        return 130
    print()
    print(summary_table(outcomes))
    return 1 if any(o.status == "failed" for o in outcomes) else 0


def _cmd_unseal(args) -> int:
    from squeezestudy.data.fashion_mnist import load
    from squeezestudy.runs.sealed import unseal

    unseal(args.runs, dataset=load(args.data_dir))
    return 0


def _cmd_deep_compression(args) -> int:
    from squeezestudy.compression.grid import parse_setting, run_grid

    if args.grid == "layers":
        from squeezestudy.compression import layer_search

        if not args.run:
            raise ValueError("the layers round compresses a finished run: name it, e.g. "
                             "`squeezestudy deep-compression layers headline2-e120-s0`")
        layer_search.run(args.run, only=args.only, jobs=args.jobs)
        return 0
    if args.grid == "unseal":
        from squeezestudy.compression import layer_search

        if not args.run:
            raise ValueError("name the setting whose three files to open, e.g. "
                             "`squeezestudy deep-compression unseal layers-i3-4bit`")
        layer_search.unseal(args.run)
        return 0
    run_grid(args.grid, args.run, jobs=args.jobs, only=parse_setting(args.only) if args.only else None)
    return 0


def _cmd_report(args) -> int:
    from squeezestudy.report.documents import main as report_main

    return report_main(args.docs or None, check=args.check)


def _cmd_tune(args) -> int:
    from squeezestudy.core.device import pick_device
    from squeezestudy.data.fashion_mnist import load
    from squeezestudy.speed import tune
    from squeezestudy.training import settings

    device = pick_device(args.device)
    pending = None
    if args.if_training:  # `make study`: tune only what is about to train, where it pays
        from squeezestudy.batch.manifest import pending_training

        pending = {}
        for r in pending_training(args.if_training):
            model = str(r.parameters.get("model"))
            pending[model] = pending.get(model, 0) + int(r.parameters.get("epochs", 1))
        if not pending:
            print(f"every training run of profile {args.if_training} is done: nothing to tune")
            return 0
        args.models = sorted(pending)
    tuned = settings.read_cache().get(settings.machine_key(device), {})
    tuned = tuned if isinstance(tuned, dict) else {}
    if args.if_untuned and all(any(key.startswith(f"{m} |") for key in tuned) for m in args.models):
        print(f"this machine is tuned already ({settings.machine_key(device)}); `squeezestudy tune` retunes")
        return 0
    if args.show:
        entries = tuned
        print(f"{settings.cache_path()}: {len(entries)} model(s) tuned on {settings.machine_key(device)}")
        for key, entry in entries.items():
            problem = settings.choice_problem(entry.get("choice") if isinstance(entry, dict) else entry) \
                or (settings.choice_problem(entry.get("default")) and "its static default is unreadable")
            if problem:
                print(f"{key}: unusable ({problem}); `squeezestudy tune` measures it again")
                continue
            chosen, default = settings.Choice(**entry["choice"]), settings.Choice(**entry["default"])
            print(f"{key}: " + (f"the static default kept ({default.label()})" if chosen == default else
                                f"{chosen.label()}, in place of the static default ({default.label()})"))
    else:
        if args.seconds <= 0:
            raise UsageError(f"--seconds must be positive, got {args.seconds}")
        from squeezestudy.models import spec

        for name in args.models:
            spec(name)  # an unknown name fails before any measuring
        settings.check_cache_writable()  # and a cache it could not write, before a minute of it
        lines: list[str] = []

        def echo(line: str) -> None:
            print(line, flush=True)
            lines.append(line)

        try:
            entries = tune.tune(args.models, device, load(args.data_dir), args.seconds, echo=echo,
                                verbose=args.verbose, pending_epochs=pending)
        except tune.NotQuiet as err:
            print(f"not tuned: {err}")
            return 0 if (args.if_training or args.if_untuned) else 1
        if entries:
            print(f"cached in {display_path(settings.cache_path())}")
    if args.record:
        from squeezestudy.core import fileio

        fileio.write_text(Path(args.record), json.dumps(
            {"machine": settings.machine_key(device), "entries": entries,
             "lines": [] if args.show else lines}, indent=1, sort_keys=True) + "\n")
    return 0


def _cmd_bench(args) -> int:
    from squeezestudy.speed.bench import main as bench_main

    return bench_main(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="squeezestudy", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_LazyParser)

    p = sub.add_parser("data", help="find (or download) Fashion-MNIST and check it")
    p.add_argument("--dir", help="directory holding the four IDX files")
    p.set_defaults(func=_cmd_data)

    p = sub.add_parser("train", help="train one model without a notebook", add_flags=_train_flags)
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("batch", help="run a profile of the manifest through papermill")
    p.add_argument("--profile", default="full")
    p.add_argument("--only", nargs="+", help="run names (or prefixes) to run")
    p.add_argument("--force", action="store_true", help="re-run runs that are already done")
    p.add_argument("--jobs", type=int, help="worker processes of a local Dask cluster, one notebook "
                                            "each at a time (default 1)")
    p.add_argument("--gpus", help="GPU ids for the local cluster's workers, e.g. 0,1 (each gets its "
                                  "own CUDA_VISIBLE_DEVICES; training runs then take one each)")
    p.add_argument("--scheduler", help="address of a running Dask scheduler, e.g. tcp://host:8786, "
                                       "instead of a local cluster")
    p.add_argument("--scheduler-file", help="the JSON file `dask scheduler --scheduler-file` wrote")
    p.add_argument("--manifest", default=str(paths.MANIFEST))
    p.add_argument("--kernel", help="Jupyter kernel name (default: the notebook's)")
    p.add_argument("--dry-run", action="store_true", help="validate and list, run nothing")
    p.set_defaults(func=_cmd_batch)

    p = sub.add_parser("report", help="write the result tables of README and docs/ from outputs/runs "
                                      "(--check: fail if the committed ones differ)")
    p.add_argument("--check", action="store_true", help="compare only; exit 1 if any table differs")
    p.add_argument("docs", nargs="*", help="documents to fill (default: README.md and docs/*.md)")
    p.set_defaults(func=_cmd_report)

    p = sub.add_parser("tune", help="measure this machine's fastest settings per model and cache "
                                    "them: fit uses them for settings left to auto")
    from squeezestudy.speed.tune import DEFAULT_MODELS as TUNED_MODELS

    p.add_argument("--models", nargs="+", default=list(TUNED_MODELS))
    p.add_argument("--seconds", type=float, default=1.5, help="time per group of settings timed together")
    p.add_argument("--verbose", action="store_true", help="print every timing, not one line a model")
    p.add_argument("--device", default="auto")
    p.add_argument("--data-dir")
    p.add_argument("--show", action="store_true", help="print this machine's cached choices only")
    p.add_argument("--if-untuned", action="store_true", help="do nothing if every model is tuned here")
    p.add_argument("--if-training", metavar="PROFILE",
                   help="tune only the models of PROFILE's training runs that are not done yet")
    p.add_argument("--record", help="also write this machine's results to this JSON file (docs/speed.md's "
                                    "tuning table reads outputs/benchmarks/<cpu kind>/tuning.json)")
    p.set_defaults(func=_cmd_tune)

    p = sub.add_parser("deep-compression", help="the Deep Compression grids of notebooks 11 and 12")
    p.add_argument("grid", choices=["one-fire", "headline", "run", "long", "500x", "layers",
                                         "unseal"])
    p.add_argument("run", nargs="?", help="the finished run to compress (grids run, long, 500x, layers); "
                                                  "for unseal, the third round's chosen setting")
    p.add_argument("--only", metavar="SETTING", help="one setting of the grid: KEPT,BITS such as 0.6,5; "
                                                     "for layers a name such as layers-i3-4bit")
    p.add_argument("--jobs", type=int, default=2, help="lanes of recipes at a time, one thread each")
    p.set_defaults(func=_cmd_deep_compression)

    p = sub.add_parser("unseal", help="open the test split once for sealed runs of a frozen recipe")
    p.add_argument("runs", nargs="+", help="run names, or a recipe's prefix for all its seeds")
    p.add_argument("--data-dir", help="directory of the four IDX files")
    p.set_defaults(func=_cmd_unseal)

    p = sub.add_parser("bench", help="training throughput: naive pipeline vs this project's")
    from squeezestudy.speed.bench import add_arguments

    add_arguments(p)
    p.set_defaults(func=_cmd_bench)
    return parser


def _user_errors() -> tuple[type[BaseException], ...]:
    """Errors that mean bad input (arguments, data, run directories): one message, exit 2."""
    from squeezestudy.core.lock import RunLockedError
    from squeezestudy.core.paths import OutputDirError
    from squeezestudy.data.fashion_mnist import DataNotFoundError
    from squeezestudy.data.idx import IdxError
    from squeezestudy.models import UnknownModelError
    from squeezestudy.runs.sealed import SealError
    from squeezestudy.training.rundir import ResultFileError, ResultFileMissingError, RunExistsError

    return (ValueError, UnknownModelError, DataNotFoundError, IdxError, OutputDirError,
            ResultFileError, ResultFileMissingError, RunExistsError, SealError, RunLockedError)


class Terminated(KeyboardInterrupt):
    """SIGTERM (`kill`, a cluster's job scheduler): handled like Ctrl-C, so that training keeps
    its last checkpoint and says so, and a batch interrupts its kernels and prints its summary."""


def main(argv: list[str] | None = None) -> int:
    """The command line. Exit codes: 0 done, 1 a failure (a run that failed, the disk), 2 bad
    input (one line saying what to do), 130 Ctrl-C, 143 SIGTERM."""
    terminated = False

    def on_sigterm(signum, frame) -> None:
        nonlocal terminated
        terminated = True
        raise Terminated("terminated (SIGTERM)")

    previous = signal.signal(signal.SIGTERM, on_sigterm)
    try:
        args = build_parser().parse_args(argv)  # inside: a Ctrl-C while torch loads is one line too
        code = args.func(args)
        return 143 if terminated and code == 130 else code
    except KeyboardInterrupt as err:  # fit's TrainingInterrupted says what is saved
        print(f"\n{err}" if str(err) else "\ninterrupted", file=sys.stderr)
        return 143 if terminated else 130
    except FloatingPointError as err:  # NonFiniteLossError: the run stopped, its checkpoint kept
        print(f"error: {err}", file=sys.stderr)
        return 1
    except _user_errors() as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # the disk, not the user: no traceback either, but not a usage error
        print(f"error: {err}", file=sys.stderr)
        return 1
    finally:
        signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
