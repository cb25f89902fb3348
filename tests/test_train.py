import json

import pytest
import torch
from torch import nn

from squeezestudy import models
from squeezestudy.training.config import TrainConfig
from squeezestudy.training.loop import NonFiniteLossError, fit
from squeezestudy.training.step import lr_factor

FAST = {"model": "lenet", "batch_size": 100, "device": "cpu", "precision": "fp32", "lr": 3e-3}


def test_short_run_beats_chance(small_fashion_mnist, tmp_path):
    result = fit(TrainConfig(**FAST, epochs=3), small_fashion_mnist, out_dir=tmp_path, quiet=True)
    assert result.metrics["test_acc"] > 0.6  # chance is 0.1
    assert result.history["train_loss"].iloc[-1] < result.history["train_loss"].iloc[0]
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    for key in ("model", "params", "epochs", "seed", "precision", "device", "test_acc", "val_acc",
                "train_time_s", "images_per_s", "versions"):
        assert key in metrics
    assert metrics["params"] == 44_426 and metrics["versions"]["torch"] == torch.__version__
    assert (tmp_path / "history.csv").read_text().count("\n") == 4
    assert not list(tmp_path.glob(".*.tmp"))


def test_same_seed_same_numbers(small_fashion_mnist):
    cfg = TrainConfig(**{**FAST, "model": "squeezenet_fmnist"}, epochs=1, augment=True, seed=3)
    a = fit(cfg, small_fashion_mnist, quiet=True)
    b = fit(cfg, small_fashion_mnist, quiet=True)
    cols = ["train_loss", "train_acc", "val_loss", "val_acc", "test_acc"]
    assert a.history[cols].equals(b.history[cols])
    c = fit(TrainConfig(**{**FAST, "model": "squeezenet_fmnist"}, epochs=1, augment=True, seed=4),
            small_fashion_mnist, quiet=True)
    assert not a.history[cols].equals(c.history[cols])


def test_resume_ends_with_the_same_weights(small_fashion_mnist, tmp_path, interrupted_fit):
    cfg = TrainConfig(**{**FAST, "model": "squeezenet_fmnist"}, epochs=3, augment=True)
    straight = fit(cfg, small_fashion_mnist, out_dir=tmp_path / "a", quiet=True)

    # Interrupt a second run in epoch 3 (its 5th evaluation), after epoch 2's checkpoint.
    interrupted_fit(5, cfg, small_fashion_mnist, out_dir=tmp_path / "b")
    state = torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=False)
    assert state["epoch"] == 2
    assert state["choice"] == {k: straight.metrics[k] for k in ("precision", "channels_last", "micro_batch")}

    resumed = fit(cfg, small_fashion_mnist, out_dir=tmp_path / "b", quiet=True, resume=True)
    for (name, a), b in zip(straight.model.state_dict().items(),
                            resumed.model.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    assert resumed.history["test_acc"].tolist() == straight.history["test_acc"].tolist()


def test_nan_loss_stops_with_epoch_step_and_lr(small_fashion_mnist, tmp_path):
    class Exploding(nn.Module):
        """LeNet whose output turns NaN from the 5th training step of epoch 2."""

        def __init__(self, **kwargs):
            super().__init__()
            self.net = models.lenet(**kwargs)
            self.calls = 0

        def forward(self, x):
            if self.training:
                self.calls += 1
            out = self.net(x)
            return out * float("nan") if self.training and self.calls >= 25 else out

    models.register("exploding", models.ModelSpec(Exploding, 28, 1, "test only"))
    try:
        cfg = TrainConfig(**{**FAST, "model": "exploding"}, epochs=3)  # 20 steps per epoch
        with pytest.raises(NonFiniteLossError, match=r"epoch 2, step 5 \(lr .*\).*epoch 1 is kept"):
            fit(cfg, small_fashion_mnist, out_dir=tmp_path, quiet=True)
        state = torch.load(tmp_path / "checkpoint.pt", weights_only=False)
        assert state["epoch"] == 1 and not (tmp_path / "metrics.json").exists()
        assert all(torch.isfinite(v).all() for v in state["model"].values())
    finally:
        del models.REGISTRY["exploding"]


def test_bad_parameters_are_refused():
    with pytest.raises(models.UnknownModelError, match="known models"):
        TrainConfig(model="vgg")
    for bad, match in (({"epochs": 0}, "epochs"), ({"lr": -1.0}, "lr"), ({"optimizer": "lion"}, "optimizer"),
                       ({"schedule": "step"}, "schedule"), ({"label_smoothing": 1.0}, "label_smoothing")):
        with pytest.raises(ValueError, match=match):
            TrainConfig(**bad)


def test_resume_refuses_a_different_config(small_fashion_mnist, tmp_path):
    fit(TrainConfig(**FAST, epochs=1), small_fashion_mnist, out_dir=tmp_path, quiet=True)
    with pytest.raises(ValueError, match="differs in: lr"):
        fit(TrainConfig(**{**FAST, "lr": 1e-3}, epochs=1), small_fashion_mnist, out_dir=tmp_path,
            quiet=True, resume=True)


def test_schedules():
    assert lr_factor(0, 100, "constant", 0.2) == 1.0
    assert lr_factor(100, 100, "cosine", 0.2) == pytest.approx(0.0)
    assert lr_factor(20, 100, "onecycle", 0.2) == pytest.approx(1.0)
    assert lr_factor(0, 100, "onecycle", 0.2) == pytest.approx(0.04)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_defaults_bf16_channels_last(small_fashion_mnist):
    cfg = TrainConfig(model="squeezenet_fmnist", epochs=3, batch_size=100)
    result = fit(cfg, small_fashion_mnist, quiet=True)
    m = result.metrics
    assert m["device"].startswith("cuda") and m["channels_last"]
    assert m["precision"] == ("bf16" if torch.cuda.is_bf16_supported() else "fp32")
    assert m["test_acc"] > 0.5
    assert next(result.model.parameters()).is_cuda


def test_micro_batches_give_the_same_update(small_fashion_mnist):
    """Gradients accumulated over micro-batches equal the whole batch's (no dropout in LeNet)."""
    from squeezestudy.training.config import build_model
    from squeezestudy.training.step import make_optimizer, train_step

    cfg = TrainConfig(model="lenet", optimizer="sgd", lr=0.1, device="cpu", precision="fp32")
    x = torch.randn(96, 1, 28, 28)
    y = small_fashion_mnist.train.labels[:96]
    results = []
    for micro in (0, 32, 40):  # whole, 3 equal chunks, 3 unequal chunks (40, 40, 16)
        torch.manual_seed(0)
        model = build_model(cfg)
        loss, logits, finite = train_step(model, make_optimizer(model, cfg), x, y,
                                          torch.device("cpu"), "fp32", micro_batch=micro)
        assert finite and logits.shape == (96, 10)
        results.append((loss, [p.detach().clone() for p in model.parameters()]))
    for loss, params in results[1:]:
        assert torch.allclose(loss, results[0][0], atol=1e-5)
        for a, b in zip(params, results[0][1], strict=True):
            assert torch.allclose(a, b, atol=1e-5)


def test_runs_made_before_a_config_field_existed_still_match():
    stored = TrainConfig(model="lenet").to_dict()
    del stored["micro_batch"]  # as written by runs that predate the field
    assert TrainConfig(model="lenet").same_as(stored)
    assert not TrainConfig(model="lenet", micro_batch=64).same_as(stored)


def test_fit_or_load_reads_back_or_starts_over(small_fashion_mnist, tmp_path, monkeypatch):
    from squeezestudy.runs import study as train_module
    from squeezestudy.runs.study import fit_or_load

    calls = []
    real_fit = train_module.fit
    monkeypatch.setattr(train_module, "fit", lambda *a, **k: calls.append(k["resume"]) or real_fit(*a, **k))
    cfg = TrainConfig(**FAST, epochs=1)
    first, _ = fit_or_load(cfg, tmp_path, quiet=True, dataset=small_fashion_mnist)
    again, _ = fit_or_load(cfg, tmp_path, quiet=True, dataset=small_fashion_mnist)
    assert again == first and len(calls) == 1  # read back, not retrained
    (tmp_path / "metrics.json").unlink()  # leaves a checkpoint written by `cfg`
    other, _ = fit_or_load(TrainConfig(**{**FAST, "lr": 1e-3}, epochs=1), tmp_path, quiet=True,
                           dataset=small_fashion_mnist)
    assert other["config"]["lr"] == 1e-3
    assert calls == [True, True, False]  # the other config's checkpoint was refused, then a fresh run


def test_misclassified_most_confident_first():
    from squeezestudy.training import evaluate

    pred, labels = torch.tensor([0, 1, 2, 3, 4]), torch.tensor([0, 2, 2, 0, 1])
    confidence = torch.tensor([0.9, 0.4, 0.8, 0.7, 0.95])
    assert evaluate.misclassified(pred, labels).tolist() == [1, 3, 4]
    assert evaluate.misclassified(pred, labels, confidence=confidence).tolist() == [4, 3, 1]
    assert evaluate.misclassified(pred, labels, confidence=confidence, limit=2).tolist() == [4, 3]
    assert evaluate.misclassified(labels, labels, confidence=confidence).tolist() == []


def test_a_resumed_run_keeps_the_precision_it_started_with(monkeypatch):
    """The defaults may change between a run's start and its resume (a new tuning, a new release):
    the precision is the one its checkpoint recorded; a checkpoint from before the choice was
    recorded started when auto meant fp32 on a CPU for every model but the 224x224 ones and
    AlexNet-112."""
    from squeezestudy.core import machine
    from squeezestudy.training.settings import resumed_choice

    cpu = torch.device("cpu")
    with machine.simulate("avx512_bf16"):
        config = TrainConfig(model="lenet")
        assert resumed_choice(config, cpu, None).precision == "fp32"  # an old checkpoint
        assert resumed_choice(config, cpu, {"precision": "fp32"}).precision == "fp32"
        assert resumed_choice(TrainConfig(model="alexnet"), cpu, None).precision == "bf16"
        explicit = TrainConfig(model="lenet", precision="fp32")
        assert resumed_choice(explicit, cpu, {"precision": "bf16"}).precision == "fp32"
    with machine.simulate("avx2"):
        assert resumed_choice(TrainConfig(model="lenet"), cpu, {"precision": "bf16"}).precision == "bf16"


def test_adamw_is_fused_on_a_cpu_and_resumes_the_for_loops_state():
    """The fused kernel and the for-loop keep the same state: a checkpoint of either resumes in the
    other, and one step of each from the same state agrees to float rounding."""
    from squeezestudy.training.config import TrainConfig, build_model
    from squeezestudy.training.step import make_optimizer

    cfg = TrainConfig(model="lenet", optimizer="adamw", lr=1e-3)
    torch.manual_seed(0)
    models = [build_model(cfg) for _ in range(2)]
    models[1].load_state_dict(models[0].state_dict())
    loop, fused = make_optimizer(models[0], cfg, fused=False), make_optimizer(models[1], cfg)
    assert fused.defaults["fused"] and not loop.defaults["fused"]
    x = torch.randn(8, 1, 28, 28)
    for step in range(3):
        for model, optimizer in ((models[0], loop), (models[1], fused)):
            optimizer.zero_grad()
            model(x).square().mean().backward()
            optimizer.step()
        if step == 1:  # swap the states: each resumes the other's
            state = loop.state_dict()
            loop.load_state_dict(fused.state_dict())
            fused.load_state_dict(state)
    for a, b in zip(models[0].parameters(), models[1].parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
