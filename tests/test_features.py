"""`Features` runs a ReLU after the max-pool that follows it: the same values and gradients, bit for
bit, as the order built; the built order where a hook or torch.fx needs it."""

import copy
from collections import OrderedDict

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from squeezestudy import models
from squeezestudy.models import features, summary

CL = torch.channels_last


@pytest.fixture
def swaps(monkeypatch):
    """A list that grows by one each time a ReLU runs after its pool (it still runs)."""
    made = []
    real = features.swappable

    def spy(*args):
        taken = real(*args)
        made.extend([1] if taken else [])
        return taken

    monkeypatch.setattr(features, "swappable", spy)
    return made


def plain(model):
    """The same model and weights with its features as an nn.Sequential (the built order)."""
    model = copy.deepcopy(model)
    model.features = nn.Sequential(OrderedDict(model.features.named_children()))
    return model


def step(model, x, y, dtype):
    model.zero_grad(set_to_none=True)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
        logits = model(x)
    F.cross_entropy(logits.float(), y).backward()
    return logits, [p.grad for p in model.parameters()]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("memory_format", [CL, torch.contiguous_format])
def test_one_fire_squeezenet_is_bit_for_bit(swaps, dtype, memory_format, monkeypatch):
    relu_inputs = []
    real_relu = nn.ReLU.forward
    monkeypatch.setattr(nn.ReLU, "forward", lambda m, x: relu_inputs.append(x.shape) or real_relu(m, x))
    torch.manual_seed(0)
    fast = models.build("squeezenet_fmnist").to(memory_format=memory_format)
    assert isinstance(fast.features, features.Features)
    fast.features.use_kernels = False  # the swap alone (its compiled route: tests/test_kernels.py)
    slow = plain(fast)
    x = torch.randn(32, 1, 28, 28).contiguous(memory_format=memory_format)
    y = torch.randint(0, 10, (32,))
    torch.manual_seed(1)  # the same dropout masks for both
    fast_logits, fast_grads = step(fast, x, y, dtype)
    assert swaps == [1] and relu_inputs[0] == (32, 96, 5, 5)  # the ReLU ran on the pool's output
    torch.manual_seed(1)
    relu_inputs.clear()
    slow_logits, slow_grads = step(slow, x, y, dtype)
    assert swaps == [1] and relu_inputs[0] == (32, 96, 11, 11)
    assert torch.equal(fast_logits, slow_logits)
    assert all(torch.equal(a, b) for a, b in zip(fast_grads, slow_grads, strict=True))


@pytest.mark.parametrize("kind", ["ties", "nan"])
def test_ties_non_positive_windows_and_nan(kind, swaps):
    """Small integers give repeated maxima and all-non-positive windows; a NaN propagates alike."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randint(-3, 3, (8, 4, 11, 11), generator=gen).float()
    if kind == "nan":
        x[0, 0, 3, 3] = float("nan")
    stack = [nn.ReLU(), nn.MaxPool2d(3, stride=2, ceil_mode=True)]
    results = []
    for net in (features.Features(*stack), nn.Sequential(*stack)):
        xi = x.clone().requires_grad_()
        out = net(xi)
        out.backward(torch.arange(out.numel(), dtype=out.dtype).view_as(out))
        results.append((out, xi.grad))
    assert swaps == [1]  # the first net swapped, the nn.Sequential did not ask
    (a, ga), (b, gb) = results
    assert torch.equal(a.nan_to_num(-1), b.nan_to_num(-1))
    if kind == "ties":
        assert torch.equal(ga, gb)
        assert (b == 0).any() and (ga == 0).any()
    else:  # the NaN's window gives NaN both ways (its gradient may go elsewhere in the window)
        assert a.isnan().any() and torch.equal(ga[1:], gb[1:])


def test_hooks_and_fx_keep_the_built_order(swaps):
    torch.manual_seed(0)
    model = models.build("squeezenet_fmnist").eval()
    x = torch.randn(4, 1, 28, 28)
    seen = []
    handle = model.features.relu1.register_forward_hook(lambda m, i, o: seen.append(o.shape))
    model(x)
    handle.remove()
    assert seen == [torch.Size([4, 96, 11, 11])] and swaps == []
    table = summary.layer_table(model, 28)  # from forward hooks
    assert swaps == [] and "11x11x96" in str(table)
    traced = torch.fx.symbolic_trace(model)  # int8 quantization traces the model (notebook 07)
    names = [n.target for n in traced.graph.nodes if n.op == "call_module"]
    assert names[:3] == ["features.conv1", "features.relu1", "features.maxpool1"]
    assert torch.equal(traced(x), model(x))
    assert swaps == [1]  # only the last call, untraced and unhooked


def test_other_pairs_run_as_built(swaps):
    x = torch.randn(2, 3, 8, 8)
    out, idx = features.Features(nn.ReLU(), nn.MaxPool2d(2, return_indices=True))(x)
    assert torch.equal(out, F.max_pool2d(F.relu(x), 2)) and idx.shape == out.shape
    for first, second in ((nn.GELU(), nn.MaxPool2d(2)), (nn.ReLU(), nn.AvgPool2d(2)),
                          (nn.MaxPool2d(2), nn.ReLU())):
        net = features.Features(first, second)
        assert torch.equal(net(x), second(first(x)))
    assert swaps == []


@pytest.mark.parametrize("where", ["pool forward", "relu forward pre", "relu backward",
                                   "global forward"])
def test_every_kind_of_hook_keeps_the_built_order(swaps, where):
    net = features.Features(nn.ReLU(), nn.MaxPool2d(2))
    relu, pool = net
    seen = []
    hook = lambda *args: seen.append(1)  # noqa: E731
    handle = {"pool forward": lambda: pool.register_forward_hook(hook),
              "relu forward pre": lambda: relu.register_forward_pre_hook(hook),
              "relu backward": lambda: relu.register_full_backward_hook(hook),
              "global forward": lambda: nn.modules.module.register_module_forward_hook(hook)}[where]()
    try:
        net(torch.randn(2, 3, 8, 8, requires_grad=True)).sum().backward()
    finally:
        handle.remove()
    assert swaps == [] and seen
    net(torch.randn(2, 3, 8, 8))
    assert swaps == [1]  # unhooked again
