"""LeNet-5 without padding, for 28x28 input: 44,426 parameters ("0.04M").

conv 6@5x5 (28 -> 24), pool 2 (-> 12), conv 16@5x5 (-> 8), pool 2 (-> 4),
then fully connected 256 -> 120 -> 84 -> 10. The note's count (0.04M) fixes
the no-padding variant; d2l's padded LeNet has 61,706. The note does not say
which activation and pooling it used: the default here is ReLU with max
pooling (the modern choice, and the one that trains well); `activation="sigmoid",
pool="avg"` gives LeCun's original. PyTorch's default init.

On a CPU in bf16 (channels_last), the default's first ReLU and max-pool run as one operation
(`pooling.relu_max_pool2x2`) and conv2 in NCHW, where oneDNN's bf16 backward is faster: the
same values and gradients, bit for bit, and a training step 1.22x (95% interval 1.17-1.27) as fast
on a 2-core Zen 4 (`outputs/logs/lenet-fused-pool-2026-12-06.log`). Where a hook is registered
on `act1` or `pool1` (or globally), the plain route runs, so the hook sees what it was written for.

On a CPU in fp32, where `squeezestudy.kernels` is built, conv1, its ReLU and the first pool run
as one compiled pass, and conv2's ReLU and pool compiled after oneDNN's conv2, whose backward then
sums over the pooled maxima alone (the gradient is zero elsewhere): the same function, its sums in
another order than oneDNN's (values and gradients within float32 rounding, `tests/test_kernels.py`),
and a training step about 2.4x as fast as torch's operations on a 2-core Zen 4 and on an AVX2
machine's kernels there (`outputs/logs/lenet-kernels-2026-12-07.log`). Torch's operations run
where the kernels are not built, a hook is registered on the modules they replace, a tracer sees
the model, or `use_kernels` is False (the naive pipeline of the benchmark).
"""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn

from squeezestudy import kernels
from squeezestudy.models import features, pooling

ACTIVATIONS = {"relu": nn.ReLU, "sigmoid": nn.Sigmoid, "tanh": nn.Tanh}
POOLS = {"max": nn.MaxPool2d, "avg": nn.AvgPool2d}


class LeNet(nn.Module):
    def __init__(self, num_classes: int = 10, in_channels: int = 1, activation: str = "relu",
                 pool: str = "max") -> None:
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}; use one of {sorted(ACTIVATIONS)}")
        if pool not in POOLS:
            raise ValueError(f"unknown pool {pool!r}; use one of {sorted(POOLS)}")
        act, pool_cls = ACTIVATIONS[activation], POOLS[pool]
        self.fusable = activation == "relu" and pool == "max"
        # fp32 on a CPU, the compiled kernels where they are built (False: torch's operations)
        self.use_kernels = True
        self.features = nn.Sequential(OrderedDict([
            ("conv1", nn.Conv2d(in_channels, 6, kernel_size=5)), ("act1", act()),
            ("pool1", pool_cls(kernel_size=2, stride=2)),
            ("conv2", nn.Conv2d(6, 16, kernel_size=5)), ("act2", act()),
            ("pool2", pool_cls(kernel_size=2, stride=2)),
        ]))
        self.classifier = nn.Sequential(OrderedDict([
            ("flatten", nn.Flatten()),
            ("fc1", nn.Linear(16 * 4 * 4, 120)), ("act3", act()),
            ("fc2", nn.Linear(120, 84)), ("act4", act()),
            ("fc3", nn.Linear(84, num_classes)),
        ]))  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.features
        if self.use_kernels and _relu_pool(f.act1, f.pool1) and kernels.ops.conv_relu_pool_takes(x, f.conv1) \
                and not features.hooked(f.conv1, f.act1, f.pool1):
            h = kernels.conv_relu_pool2x2(x, f.conv1)  # fp32 on a CPU (module docstring)
        else:
            h = f.conv1(x)
            # (pooling.fusable first: while torch.fx traces the model `h` is a Proxy, and it says no)
            if self.fusable and pooling.fusable(h) and h.dtype == torch.bfloat16 \
                    and not features.hooked(f.act1, f.pool1):
                # the same values and gradients as the route below, in less time (module docstring)
                h = pooling.relu_max_pool2x2(h, torch.contiguous_format)
                h = F.conv2d(h, f.conv2.weight.contiguous(), f.conv2.bias)
                return self.classifier(f.pool2(f.act2(h.contiguous(memory_format=torch.channels_last))))
            h = f.pool1(f.act1(h))
        if self.use_kernels and _relu_pool(f.act2, f.pool2) and kernels.ops.conv_relu_pool_takes(h, f.conv2) \
                and not features.hooked(f.conv2, f.act2, f.pool2):
            return self.classifier(kernels.conv_relu_pool2x2(h, f.conv2))
        return self.classifier(f.pool2(f.act2(f.conv2(h))))


def _relu_pool(relu: nn.Module, pool: nn.Module) -> bool:
    """Whether `relu` then `pool` are torch's ReLU and a plain 2x2 stride-2 max-pool."""
    return (type(relu) is nn.ReLU and type(pool) is nn.MaxPool2d and pool.kernel_size in (2, (2, 2))
            and pool.stride in (2, (2, 2)) and pool.padding in (0, (0, 0)) and pool.dilation in (1, (1, 1))
            and not pool.ceil_mode and not pool.return_indices)


def lenet(**kwargs) -> LeNet:
    return LeNet(**kwargs)
