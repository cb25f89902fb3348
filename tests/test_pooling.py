"""The fused ReLU + 2x2 max-pool computes what torch's two operations compute, values and
gradients, and LeNet's fast route trains bit for bit as its plain one."""

import copy

import pytest
import torch
import torch.nn.functional as F

from squeezestudy import models
from squeezestudy.models import pooling

CL = torch.channels_last


def reference(x, g):
    x = x.detach().clone().requires_grad_()
    out = F.max_pool2d(F.relu(x), 2)
    out.backward(g)
    return out, x.grad


def fused(x, g, memory_format=CL):
    x = x.detach().clone().requires_grad_()
    out = pooling.relu_max_pool2x2(x, memory_format)
    out.backward(g)
    return out, x.grad


def maps(kind, dtype, shape=(64, 6, 24, 24)):
    gen = torch.Generator().manual_seed(0)
    if kind == "ties":  # small integers: many ties, many all-non-positive windows
        x = torch.randint(-3, 4, shape, generator=gen).to(dtype)
    else:
        x = torch.randn(shape, generator=gen).to(dtype)
    return x.contiguous(memory_format=CL)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("kind", ["ties", "randn"])
@pytest.mark.parametrize("memory_format", [CL, torch.contiguous_format])
def test_fused_equals_torch(dtype, kind, memory_format):
    x = maps(kind, dtype)
    assert pooling.fusable(x)
    g = torch.randn(64, 6, 12, 12).to(dtype)
    out, grad = fused(x, g, memory_format)
    ref_out, ref_grad = reference(x, g)
    assert torch.equal(out, ref_out) and torch.equal(grad, ref_grad)
    assert out.is_contiguous(memory_format=memory_format)
    assert grad.is_contiguous(memory_format=CL)
    if kind == "ties":  # the tie rule is exercised: some windows hold a repeated positive maximum
        top = torch.maximum(x[:, :, 0::2, 0::2], x[:, :, 0::2, 1::2])
        assert (top.eq(x[:, :, 0::2, 0::2]) & top.eq(x[:, :, 0::2, 1::2]) & (top > 0)).any()


@pytest.fixture
def calls(monkeypatch):
    """A list that grows by one each time the fast route runs (it still runs)."""
    made = []
    real = pooling._ReLUMaxPool2x2.apply
    monkeypatch.setattr(pooling._ReLUMaxPool2x2, "apply", lambda *a: made.append(1) or real(*a))
    return made


def test_route_is_taken_where_it_applies(calls):
    for x in (maps("randn", torch.bfloat16, (64, 6, 23, 24)),  # odd height
              maps("randn", torch.bfloat16, (10, 6, 24, 24)),  # batch not a multiple of 16
              maps("randn", torch.bfloat16).contiguous()):  # NCHW
        assert not pooling.fusable(x)
        g = torch.randn(F.max_pool2d(x, 2).shape).to(x.dtype)
        out, grad = fused(x, g)
        ref_out, ref_grad = reference(x, g)
        assert torch.equal(out, ref_out) and torch.equal(grad, ref_grad)
    assert calls == []
    fused(maps("randn", torch.bfloat16), torch.randn(64, 6, 12, 12).to(torch.bfloat16))
    assert calls == [1]


@pytest.mark.parametrize("shape", [(16, 1, 2, 2), (32, 3, 4, 6)])
def test_the_incoming_gradient_is_left_alone(shape):
    x = maps("ties", torch.bfloat16, shape)
    g = torch.randn(shape[0], shape[1], shape[2] // 2, shape[3] // 2).to(torch.bfloat16)
    kept = g.clone()
    out, grad = fused(x, g, torch.contiguous_format)
    ref_out, ref_grad = reference(x, g)
    assert torch.equal(out, ref_out) and torch.equal(grad, ref_grad) and torch.equal(g, kept)


def test_no_grad_and_nan():
    x = maps("randn", torch.float32)
    x[0, 0, 0, 0] = float("nan")
    with torch.no_grad():
        out = pooling.relu_max_pool2x2(x)
    ref = F.max_pool2d(F.relu(x), 2)
    assert out[0, 0, 0, 0].isnan() and ref[0, 0, 0, 0].isnan()
    assert torch.equal(out.flatten()[1:], ref.flatten()[1:])


def step(model, x, y):
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model(x)
    F.cross_entropy(logits.float(), y).backward()
    return logits, [p.grad for p in model.parameters()]


def test_lenet_fast_route_is_bit_for_bit(calls):
    torch.manual_seed(0)
    fast = models.build("lenet").to(memory_format=CL)
    plain = copy.deepcopy(fast)
    plain.fusable = False
    x = torch.randn(32, 1, 28, 28).contiguous(memory_format=CL)
    y = torch.randint(0, 10, (32,))
    fast_logits, fast_grads = step(fast, x, y)
    assert calls == [1]
    plain_logits, plain_grads = step(plain, x, y)
    assert calls == [1]
    assert torch.equal(fast_logits, plain_logits)
    assert all(torch.equal(a, b) for a, b in zip(fast_grads, plain_grads, strict=True))


def test_lenet_fp32_and_other_activations_keep_the_plain_route(calls):
    x = torch.randn(32, 1, 28, 28).contiguous(memory_format=CL)
    models.build("lenet").to(memory_format=CL)(x)  # fp32
    with torch.autocast("cpu", dtype=torch.bfloat16):
        models.build("lenet", activation="sigmoid", pool="avg").to(memory_format=CL)(x)
        models.build("lenet")(x.contiguous())  # NCHW
    assert calls == []


def test_lenet_hooks_see_the_plain_route(calls):
    """A hook on act1 or pool1 sees its module run (as on any other route); unhooked, the fast one."""
    model = models.build("lenet").to(memory_format=CL)
    x = torch.randn(32, 1, 28, 28).contiguous(memory_format=CL)
    for name in ("act1", "pool1"):
        seen = []
        handle = getattr(model.features, name).register_forward_hook(
            lambda m, i, o, seen=seen: seen.append(tuple(o.shape)))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            model(x)
        handle.remove()
        assert seen == [(32, 6, 24, 24) if name == "act1" else (32, 6, 12, 12)] and calls == []
    with torch.autocast("cpu", dtype=torch.bfloat16):
        model(x)
    assert calls == [1]


def test_lenet_traces_for_int8_quantization():
    """torch.fx traces the plain route (int8 quantization traces the model, notebook 07)."""
    model = models.build("lenet")
    traced = torch.fx.symbolic_trace(model)
    names = [n.target for n in traced.graph.nodes if n.op == "call_module"]
    assert names[:4] == ["features.conv1", "features.act1", "features.pool1", "features.conv2"]
    x = torch.randn(4, 1, 28, 28)
    model.use_kernels = False  # the eager model by torch's operations: the same, bit for bit
    assert torch.equal(traced(x), model(x))
    model.use_kernels = True  # by the compiled kernels where built: the same up to rounding
    torch.testing.assert_close(traced(x), model(x), rtol=1e-5, atol=1e-6)
