"""A stack of layers (`nn.Sequential`) that runs a ReLU after the max-pool that follows it.

`max_pool(relu(x))` and `relu(max_pool(x))` are the same function: both are monotone, so the
order changes no value, and the gradient reaches the same elements (each window's first maximum,
and only where the output is positive). After the pool the ReLU runs over the pooled maps only
(the one-Fire SqueezeNet's 5 x 5 maps instead of its 11 x 11 ones, a fifth of the values), and its
backward no longer reads and writes the large maps. So the same values and gradients, bit for bit
(`tests/test_features.py`), in less time where those maps are large. The one-Fire SqueezeNet's
first maps are 96 x 11 x 11 an image: its training step ran 1.05x (95% interval 1.04-1.07) as
fast in bf16 on a 2-core Zen 4 (whole batches both ways). On an AVX2 machine's kernels in fp32 this
alone gave 1.02x (0.99-1.06) in micro-batches of 128; with whole batches, its default there since,
the step ran 1.10x (1.07-1.13) the old default's (`outputs/logs/one-fire-relu-after-pool-2026-12-06.log`).

The modules are the ones built, in their order: the state dict, `print(model)` and indexing are
those of an `nn.Sequential`. The pair runs in its built order where a hook is registered on
either module (or globally), so a hook sees what it was written for, and while `torch.fx`
traces the model (int8 quantization fuses each convolution with the ReLU after it).

A convolution of one input channel before the pair (the one-Fire SqueezeNet's conv1), in fp32 on
a CPU where `squeezestudy.kernels` is built, runs as `kernels.conv_pool_relu`: torch's forward,
bit for bit, and the weight gradient summed over the pooled maxima alone; not where a hook is
registered on any of the three, or `use_kernels` is False (the benchmark's naive pipeline).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.modules import module as _module

from squeezestudy import kernels

_GLOBAL_HOOKS = ("_global_forward_hooks", "_global_forward_pre_hooks", "_global_backward_hooks",
                 "_global_backward_pre_hooks")
_HOOKS = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")


def hooked(*modules: nn.Module) -> bool:
    """Whether a hook (forward or backward, on any of `modules` or global) would see them run."""
    if any(getattr(_module, name, None) for name in _GLOBAL_HOOKS):
        return True
    return any(getattr(m, name, None) for m in modules for name in _HOOKS)


def swappable(relu: nn.Module, pool: nn.Module, x: object) -> bool:
    """Whether `relu` then `pool` may run as `pool` then `relu` for the input `x`."""
    return (type(relu) is nn.ReLU and type(pool) is nn.MaxPool2d and not pool.return_indices
            and isinstance(x, torch.Tensor) and not hooked(relu, pool))


class Features(nn.Sequential):
    """`nn.Sequential`, but each ReLU directly followed by a max-pool runs after it."""

    use_kernels = True  # False: torch's operations only (module docstring)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        layers = list(self)
        i = 0
        while i < len(layers):
            if self.use_kernels and i + 2 < len(layers) and swappable(layers[i + 1], layers[i + 2], x) \
                    and kernels.ops.conv_pool_relu_takes(x, layers[i], layers[i + 2]) \
                    and not hooked(layers[i]):
                x = kernels.conv_pool_relu(x, layers[i], layers[i + 2])
                i += 3
            elif i + 1 < len(layers) and swappable(layers[i], layers[i + 1], x):
                x = layers[i](layers[i + 1](x))  # the pool's output is new: an in-place ReLU is safe
                i += 2
            else:
                x = layers[i](x)
                i += 1
        return x
