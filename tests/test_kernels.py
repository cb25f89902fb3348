"""The compiled CPU kernels (squeezestudy.kernels): torch's results, the routes LeNet takes to them
and away from them, and a build that says why it cannot be used instead of failing."""

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from squeezestudy import kernels
from squeezestudy.kernels import build, ops
from squeezestudy.models import lenet
from squeezestudy.speed.pipelines import torch_operations
from squeezestudy.training.config import TrainConfig
from squeezestudy.training.step import make_optimizer, train_step

CL = torch.channels_last
CPU = torch.device("cpu")

needs_kernels = pytest.mark.skipif(not kernels.available(), reason=f"kernels: {kernels.status()}")


@pytest.fixture
def threads():
    """Run with 1 and with 2 threads; restore torch's setting after."""
    before = torch.get_num_threads()
    yield lambda n: torch.set_num_threads(n)
    torch.set_num_threads(before)


@pytest.fixture
def fresh_build(monkeypatch, tmp_path):
    """A build into an empty cache; the library of this machine is loaded again after."""
    monkeypatch.setenv(build.ENV_DIR, str(tmp_path / "kernels"))
    build.reset()
    yield tmp_path / "kernels"
    monkeypatch.undo()
    build.reset()


def maps(n, c, h, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, c, h, h, generator=g)
    x[0, :, :2, :2] = 0.0  # ties at zero
    x[1, 0, 2:4, 2:4] = -1.0  # a window with no positive value
    x[1, 1, 0, :2] = 0.7  # ties of a positive maximum, in raster order
    x[1, 1, 1, :2] = 0.7
    x[2, 0, 0, 0] = x[2, 0, 1, 1] = x[3, 1, 0, 1] = float("nan")
    return x.contiguous(memory_format=CL), torch.randn(n, c, h // 2, h // 2, generator=g).contiguous(
        memory_format=CL)


@needs_kernels
@pytest.mark.parametrize("n_threads", [1, 2])
@pytest.mark.parametrize("shape", [(6, 24), (16, 8), (3, 4), (2, 2)])
def test_relu_pool_is_torchs_bit_for_bit(shape, n_threads, threads):
    """The compiled ReLU and pool of conv2's route: torch's values, and torch's maximum in each
    window (its index, as a window position), ties, all-zero windows and NaN included."""
    threads(n_threads)
    x, _ = maps(5, *shape)
    want, where = F.max_pool2d(F.relu(x), 2, return_indices=True)
    got, idx = ops._relu_pool(x)
    assert got.is_contiguous(memory_format=CL) and got.shape == want.shape
    assert torch.equal(torch.isnan(got), torch.isnan(want))
    assert torch.equal(got.nan_to_num(), want.nan_to_num())
    w = x.shape[3]
    rows, cols = where // w, where % w
    position = (rows % 2) * 2 + cols % 2  # torch's flat index as the window's position 0-3
    assert torch.equal(idx.long(), position)


def conv_case(seed=0, n=64, size=28, channels=6, k=5, inputs=1):
    torch.manual_seed(seed)
    conv = nn.Conv2d(inputs, channels, k).to(memory_format=CL)
    x = torch.randn(n, inputs, size, size).contiguous(memory_format=CL)
    g = torch.randn(n, channels, (size - k + 1) // 2, (size - k + 1) // 2).contiguous(memory_format=CL)
    return conv, x, g


def grads(conv, run, x, g):
    conv.zero_grad()
    x = x.detach().requires_grad_(x.requires_grad)
    y = run(x)
    y.backward(g)
    return (y.detach(), conv.weight.grad.clone(), conv.bias.grad.clone()) + (
        (x.grad,) if x.requires_grad else ())


CONV_CASES = [dict(), dict(channels=8, k=3, size=12), dict(channels=1, k=8, size=9),  # one pass
              dict(inputs=6, channels=16, size=12), dict(inputs=3, channels=5, k=3, size=10),
              dict(inputs=8, channels=9, k=1, size=6)]  # oneDNN's forward, the pooled backward


@needs_kernels
@pytest.mark.parametrize("n_threads", [1, 2])
@pytest.mark.parametrize("input_grad", [False, True])
@pytest.mark.parametrize("case", CONV_CASES)
def test_conv_relu_pool_is_torchs_up_to_rounding(case, input_grad, n_threads, threads):
    """The same function as torch's conv, ReLU and pool; its sums run in another order, so values
    and gradients (the input's too, where it is wanted) agree to float32 rounding (relative
    1e-5), not bit for bit."""
    threads(n_threads)
    conv, x, g = conv_case(**case)
    x.requires_grad_(input_grad)
    assert ops.conv_relu_pool_takes(x, conv)
    one_pass = case.get("inputs", 1) == 1 and not input_grad
    assert ops._one_pass(x, conv) == one_pass
    want = grads(conv, lambda t: F.max_pool2d(F.relu(conv(t)), 2), x, g)
    got = grads(conv, lambda t: kernels.conv_relu_pool2x2(t, conv), x, g)
    assert got[0].is_contiguous(memory_format=CL)
    for a, b in zip(got, want, strict=True):
        assert a.shape == b.shape
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5 * b.abs().max().item())
    # the same sums every run at a given thread count
    again = grads(conv, lambda t: kernels.conv_relu_pool2x2(t, conv), x, g)
    assert all(torch.equal(a, b) for a, b in zip(got, again, strict=True))


@needs_kernels
def test_conv_relu_pool_keeps_nan():
    conv, x, g = conv_case(n=4)
    x[1, 0, 3, 3] = float("nan")  # whole pooling windows of NaN
    x[2, 0, 5, 5] = float("nan")  # and windows where only the last conv output is NaN
    want = F.max_pool2d(F.relu(conv(x)), 2)
    got = kernels.conv_relu_pool2x2(x, conv)
    assert torch.equal(torch.isnan(got), torch.isnan(want)) and torch.isnan(got).any()


def test_conv_relu_pool_leaves_what_it_does_not_take_to_torch():
    conv, x, _ = conv_case(n=2)
    assert not ops.conv_relu_pool_takes(torch.randn(2, 1, 27, 27), conv)  # a 23x23 conv output
    assert not ops._one_pass(x, nn.Conv2d(1, 9, 5))  # more channels than a vector: the other route
    many = torch.randn(2, 9, 12, 12).contiguous(memory_format=CL)
    assert not ops.conv_relu_pool_takes(many, nn.Conv2d(9, 4, 5))  # more inputs than a vector
    assert not ops.conv_relu_pool_takes(torch.randn(2, 6, 12, 12), nn.Conv2d(6, 16, 5))  # NCHW
    assert not ops.conv_relu_pool_takes(x, nn.Conv2d(1, 6, 5, padding=2))
    assert not ops.conv_relu_pool_takes(x, nn.Conv2d(1, 6, 5, bias=False))
    assert not ops.conv_relu_pool_takes(x.to(torch.float64), copy.deepcopy(conv).double())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not ops.conv_relu_pool_takes(x, conv)
    x = torch.randn(2, 1, 27, 27)
    torch.testing.assert_close(kernels.conv_relu_pool2x2(x, conv), F.max_pool2d(F.relu(conv(x)), 2))


def lenet_pair(channels_last=True):
    torch.manual_seed(0)
    fast = lenet()
    if channels_last:
        fast = fast.to(memory_format=CL)
    return fast, torch_operations(copy.deepcopy(fast))


def images(n=64, seed=1):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(n, 1, 28, 28, generator=g).contiguous(memory_format=CL),
            torch.randint(0, 10, (n,), generator=g))


@needs_kernels
def test_lenet_trains_the_same_with_and_without_its_kernels():
    """Logits and every gradient agree to float32 rounding; five AdamW steps later the loss does
    (AdamW divides by the gradients' size, so a weight whose gradient is near zero may move by
    up to a learning rate on either route: the weights are not compared)."""
    fast, plain = lenet_pair()
    x, y = images(256)
    for m in (fast, plain):
        F.cross_entropy(m(x), y).backward()
    torch.testing.assert_close(fast(x), plain(x), rtol=1e-5, atol=1e-5)
    for (name, p), q in zip(fast.named_parameters(), plain.parameters(), strict=True):
        scale = q.grad.abs().max().item()
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-4, atol=1e-5 * scale, msg=name)
    opts = [make_optimizer(m, TrainConfig(model="lenet")) for m in (fast, plain)]
    for _ in range(5):
        losses = [train_step(m, o, x, y, CPU, "fp32")[0] for m, o in zip((fast, plain), opts, strict=True)]
        torch.testing.assert_close(losses[0], losses[1], rtol=1e-3, atol=1e-5)


@needs_kernels
def test_lenet_takes_the_kernels_only_where_nothing_would_miss_them(monkeypatch):
    calls = []
    for name in ("_ConvReluPool", "_ConvPooled"):
        cls = getattr(ops, name)
        monkeypatch.setattr(cls, "apply", staticmethod(
            lambda *a, _apply=cls.apply, _name=name: (calls.append(_name), _apply(*a))[1]))
    fast, plain = lenet_pair()
    x, _ = images(8)
    fast(x)
    assert calls == ["_ConvReluPool", "_ConvPooled"]
    calls.clear()
    plain(x)  # the naive pipeline's model
    assert calls == []
    seen = []
    handle = fast.features.act1.register_forward_hook(lambda m, i, o: seen.append(o.shape))
    fast(x)
    handle.remove()
    assert seen == [(8, 6, 24, 24)] and calls == ["_ConvPooled"]  # conv1's route left, conv2's kept
    calls.clear()
    handle = fast.features.pool2.register_forward_hook(lambda m, i, o: seen.append(o.shape))
    fast(x)
    handle.remove()
    assert calls == ["_ConvReluPool"] and seen[-1] == (8, 16, 4, 4)
    calls.clear()
    saliency = x.clone().requires_grad_()  # the input's gradient is wanted: conv1 by the other route
    fast(saliency).sum().backward()
    reference = x.clone().requires_grad_()
    plain(reference).sum().backward()
    torch.testing.assert_close(saliency.grad, reference.grad, rtol=1e-4, atol=1e-6)
    assert calls == ["_ConvPooled", "_ConvPooled"]
    calls.clear()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        fast(x)
    assert calls == []  # bf16: torch's operations (and LeNet's own bf16 route)
    traced = torch.fx.symbolic_trace(fast)  # tracing sees the modules, as int8 quantization needs
    assert "features.conv1" in {n.target for n in traced.graph.nodes}


def test_a_build_that_cannot_be_made_says_why_and_models_run_torchs_ops(fresh_build, monkeypatch):
    monkeypatch.setenv(build.ENV_OFF, "0")
    build.reset()
    assert not kernels.available() and "turned off" in kernels.status()
    fast, plain = lenet_pair()
    x, _ = images(8)
    assert torch.equal(fast(x), plain(x))  # torch's operations, bit for bit
    monkeypatch.delenv(build.ENV_OFF)
    monkeypatch.setenv("CC", "no-such-compiler")
    build.reset()
    assert "no C compiler" in kernels.status()
    with pytest.raises(build.KernelsUnavailable, match="no C compiler"):
        build.library()


@pytest.mark.skipif(build.compiler() is None, reason="no C compiler")
def test_a_compile_error_is_one_line_and_an_edit_builds_anew(fresh_build, monkeypatch, tmp_path):
    broken = tmp_path / "conv_pool.c"
    broken.write_text("int relu_pool(void) { return }\n")
    monkeypatch.setattr(build, "SOURCE", broken)
    build.reset()
    assert "could not build conv_pool.c" in kernels.status() and "error" in kernels.status()
    assert "\n" not in kernels.status()
    cc = build.compiler()
    first = build.library_path(cc)
    broken.write_text("int relu_pool(void) { return 0; }\n")
    assert build.library_path(cc) != first  # another source, another library


@pytest.mark.skipif(build.compiler() is None, reason="no C compiler")
def test_an_unwritable_cache_is_named(fresh_build, monkeypatch, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv(build.ENV_DIR, str(blocker / "kernels"))
    build.reset()
    assert not kernels.available() and build.ENV_DIR in kernels.status()


@pytest.mark.skipif(build.compiler() is None or not kernels.available(), reason="no C compiler")
def test_a_fresh_build_loads_and_shares_torchs_openmp(fresh_build):
    assert kernels.available(), kernels.status()
    assert list(fresh_build.glob("conv_pool-*.so")) and not list(fresh_build.glob(".*"))
    assert len(build.openmp_runtimes()) == 1


POOL_CASES = [dict(channels=96, k=7, stride=2, pool=(3, 2, True), size=28),  # the one-Fire's conv1
              dict(channels=8, k=5, stride=1, pool=(2, 2, False), size=28),
              dict(channels=5, k=3, stride=3, pool=(3, 3, False), size=20),  # rows read past W
              dict(channels=3, k=8, stride=1, pool=(2, 1, True), size=13)]


@needs_kernels
@pytest.mark.parametrize("n_threads", [1, 2])
@pytest.mark.parametrize("case", POOL_CASES)
def test_conv_pool_relu_is_torchs_forward_and_gradients_up_to_rounding(case, n_threads, threads):
    """torch's own forward, bit for bit; the weight and bias gradients, summed over the pooled
    maxima alone, within float32 rounding of torch's, and the same bits every run."""
    threads(n_threads)
    torch.manual_seed(0)
    conv = nn.Conv2d(1, case["channels"], case["k"], stride=case["stride"]).to(memory_format=CL)
    kernel, stride, ceil = case["pool"]
    pool = nn.MaxPool2d(kernel, stride, ceil_mode=ceil)
    x = torch.randn(32, 1, case["size"], case["size"]).contiguous(memory_format=CL)
    g = torch.randn_like(torch.relu(pool(conv(x))))
    assert ops.conv_pool_relu_takes(x, conv, pool)

    def run(f):
        conv.zero_grad()
        y = f(x)
        y.backward(g)
        return y.detach(), conv.weight.grad.clone(), conv.bias.grad.clone()

    want = run(lambda t: torch.relu(pool(conv(t))))
    got = run(lambda t: kernels.conv_pool_relu(t, conv, pool))
    assert torch.equal(got[0], want[0])
    for a, b in zip(got[1:], want[1:], strict=True):
        assert a.shape == b.shape
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5 * b.abs().max().item())
    again = run(lambda t: kernels.conv_pool_relu(t, conv, pool))
    assert all(torch.equal(a, b) for a, b in zip(got, again, strict=True))


def test_conv_pool_relu_leaves_what_it_does_not_take_to_torch():
    conv, pool = nn.Conv2d(1, 96, 7, stride=2), nn.MaxPool2d(3, 2, ceil_mode=True)
    x = torch.randn(2, 1, 28, 28)
    assert not ops.conv_pool_relu_takes(x.clone().requires_grad_(), conv, pool)  # a saliency map
    assert not ops.conv_pool_relu_takes(x, nn.Conv2d(1, 96, 7, stride=2, padding=1), pool)
    assert not ops.conv_pool_relu_takes(x, nn.Conv2d(1, 96, 9, stride=2), pool)  # a kernel over 8
    assert not ops.conv_pool_relu_takes(torch.randn(2, 2, 28, 28), nn.Conv2d(2, 96, 7), pool)
    assert not ops.conv_pool_relu_takes(x, conv, nn.MaxPool2d(3, 2, padding=1))
    assert not ops.conv_pool_relu_takes(x, conv, nn.AvgPool2d(3, 2))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not ops.conv_pool_relu_takes(x, conv, pool)
    y = x.clone().requires_grad_()
    assert torch.equal(kernels.conv_pool_relu(y, conv, pool), torch.relu(pool(conv(y))))


@needs_kernels
def test_the_one_fire_squeezenet_takes_the_kernel_only_where_nothing_would_miss_it(monkeypatch):
    from squeezestudy.models import squeezenet_fmnist

    calls = []
    apply = ops._ConvPoolRelu.apply
    monkeypatch.setattr(ops._ConvPoolRelu, "apply",
                        staticmethod(lambda *a: (calls.append(1), apply(*a))[1]))
    torch.manual_seed(0)
    fast = squeezenet_fmnist().to(memory_format=CL).eval()  # dropout off: the same logits
    plain = torch_operations(copy.deepcopy(fast))
    x, y = images(64)
    for m in (fast, plain):
        F.cross_entropy(m(x), y).backward()
    assert len(calls) == 1
    assert torch.equal(fast(x), plain(x))  # torch's forward, bit for bit
    for (name, p), q in zip(fast.named_parameters(), plain.parameters(), strict=True):
        scale = q.grad.abs().max().item()
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-5, atol=1e-5 * scale, msg=name)
        if not name.startswith("features.conv1"):
            assert torch.equal(p.grad, q.grad), name  # the rest of the backward is torch's
    calls.clear()
    for name in ("conv1", "relu1", "maxpool1"):
        handle = getattr(fast.features, name).register_forward_hook(lambda m, i, o: None)
        fast(x)
        handle.remove()
    fast(x.clone().requires_grad_())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        fast(x)
    torch.fx.symbolic_trace(fast)
    assert calls == []
    fast(x)
    assert calls == [1]


@needs_kernels
def test_the_benchmark_times_torchs_operations_beside_the_kernels():
    """Where a model's default takes compiled kernels (fp32 on a CPU), the benchmark also times it
    without them; the naive pipeline never takes them."""
    from squeezestudy.core import machine
    from squeezestudy.speed import bench, pipelines, readings

    with machine.simulate("avx2"):
        for name, has in (("lenet", True), ("squeezenet_fmnist", True), ("headline", False)):
            grid = bench.settings_grid(name, CPU, quick=True, try_compile=False)
            off = [s for s in grid if not s.kernels]
            assert [s.label for s in off] == ([readings.TORCH_OPS] if has else []), name
            assert all(s.describe()["kernels"] is False for s in off)
    model = pipelines.torch_operations(lenet())
    assert pipelines.kernel_routes(model) == [model] and model.use_kernels is False
