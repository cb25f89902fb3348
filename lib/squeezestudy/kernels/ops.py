"""The compiled kernels as autograd functions, and the inputs each one takes.

`conv_relu_pool2x2(x, conv)` is `F.max_pool2d(F.relu(conv(x)), 2)` for a convolution of at most 8
input channels (kernel at most 8x8, stride 1, no padding): of one input channel into at most 8,
whose input needs no gradient (LeNet's conv1), in one pass; otherwise (LeNet's conv2) oneDNN's
forward, then the compiled ReLU and pool, whose values and window positions are torch's bit for bit
(a window's first maximum in raster order, or its last NaN), and a backward over the pooled maxima
alone (the conv's gradient is zero elsewhere; it goes to each maximum where the output is not
<= 0). Its sums run in another order than oneDNN's, so values and gradients differ from torch's in
the last bits (tests/test_kernels.py bounds it). It takes fp32 CPU tensors in channels_last
(`conv_relu_pool_takes` says which) and returns channels_last maps; its backward runs once (no
double backward).

`conv_pool_relu(x, conv, pool)` is `F.relu(pool(conv(x)))` for a convolution of one input channel
(kernel at most 8x8, any stride, no padding) and torch's max-pool (the one-Fire SqueezeNet's conv1,
pool and ReLU): torch's own forward, bit for bit, and the weight and bias gradients summed over the
pooled maxima alone (torch's indices) instead of over every position of the convolution's output.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.autograd.function import once_differentiable

from squeezestudy.kernels import build

CL = torch.channels_last
LANES = 8  # conv_relu_pool's channel vector (CP in conv_pool.c)
MAX_KERNEL = 8


def _ptr(t: torch.Tensor) -> int:
    return t.data_ptr()


def _cpu_fp32(x: object) -> bool:
    """An fp32 CPU batch of maps, in eager mode (torch.compile traces torch's operations)."""
    return (isinstance(x, torch.Tensor) and x.device.type == "cpu" and x.dtype == torch.float32
            and x.dim() == 4 and x.numel() > 0 and not torch.compiler.is_compiling())


def _autocast(x: torch.Tensor) -> bool:
    try:
        return torch.is_autocast_enabled(x.device.type)
    except TypeError:  # torch before 2.4: the CPU has its own query
        return torch.is_autocast_cpu_enabled()


def _conv_fits(x: object, conv: nn.Module) -> bool:
    """What every kernel here needs of the convolution and its input: torch's Conv2d in fp32 on a
    CPU with a bias, a square kernel of at most 8x8, no padding, dilation or groups, and an fp32
    CPU batch of maps no smaller than the kernel, outside autocast (whose bf16 it would ignore)."""
    if type(conv) is not nn.Conv2d or not _cpu_fp32(x) or _autocast(x):
        return False
    w = conv.weight
    k = w.shape[-1]
    return (conv.bias is not None and w.shape[-2] == k <= MAX_KERNEL and conv.padding == (0, 0)
            and conv.dilation == (1, 1) and conv.groups == 1 and conv.padding_mode == "zeros"
            and w.device.type == "cpu" and w.dtype == torch.float32 and x.shape[1] == conv.in_channels
            and x.shape[2] >= k and x.shape[3] >= k and build.available())


def conv_relu_pool_takes(x: object, conv: nn.Module) -> bool:
    """Whether `conv_relu_pool2x2` runs the kernels for `x` and `conv`."""
    if not _conv_fits(x, conv):
        return False
    k = conv.weight.shape[-1]
    return (conv.in_channels <= LANES and conv.stride == (1, 1) and x.is_contiguous(memory_format=CL)
            and (x.shape[2] - k + 1) % 2 == 0 and (x.shape[3] - k + 1) % 2 == 0)


def conv_pool_relu_takes(x: object, conv: nn.Module, pool: nn.Module) -> bool:
    """Whether `conv_pool_relu` runs the kernel for `x`, `conv` and `pool` (the input's gradient is
    not wanted: it gives the weight's and the bias's)."""
    return (type(pool) is nn.MaxPool2d and _conv_fits(x, conv) and conv.in_channels == 1
            and conv.stride[0] == conv.stride[1] and not x.requires_grad and x.is_contiguous()
            and pool.padding in (0, (0, 0)) and pool.dilation in (1, (1, 1)) and not pool.return_indices)


def _weight_layout(weight: torch.Tensor) -> torch.memory_format:
    """The memory format of a weight, for its gradient."""
    return CL if weight.is_contiguous(memory_format=CL) else torch.contiguous_format


def _one_pass(x: torch.Tensor, conv: nn.Conv2d) -> bool:
    """conv_pool.c's single pass: one input channel (whose gradient it does not give) into <= 8."""
    return conv.in_channels == 1 and conv.out_channels <= LANES and not x.requires_grad


def _relu_pool(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The pooled maps and each one's window position (0-3)."""
    n, c, h, w = x.shape
    y = torch.empty((n, c, h // 2, w // 2), memory_format=CL)
    idx = torch.empty((n, c, h // 2, w // 2), dtype=torch.uint8, memory_format=CL)
    if build.library().relu_pool(_ptr(x), _ptr(y), _ptr(idx), n, h, w, c, torch.get_num_threads()):
        raise MemoryError("conv_relu_pool2x2: out of memory")
    return y, idx


class _ConvReluPool(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        c, k = weight.shape[0], weight.shape[-1]
        hp, wp = (h - k + 1) // 2, (w - k + 1) // 2
        wt, b = weight.detach().contiguous(), bias.detach().contiguous()
        y = torch.empty((n, c, hp, wp), memory_format=CL)
        idx = torch.empty((n, c, hp, wp), dtype=torch.uint8, memory_format=CL)
        build.library().conv_relu_pool(_ptr(x), _ptr(wt), _ptr(b), _ptr(y), _ptr(idx), n, h, w, c, k,
                                       torch.get_num_threads())
        ctx.save_for_backward(x, y, idx)
        ctx.meta = (n, h, w, c, k, _weight_layout(weight))
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx, gy: torch.Tensor) -> tuple[None, torch.Tensor, torch.Tensor]:
        x, y, idx = ctx.saved_tensors
        n, h, w, c, k, layout = ctx.meta
        threads = torch.get_num_threads()
        gy = gy.contiguous(memory_format=CL)
        gw = torch.empty((threads, k * k, LANES))
        gb = torch.empty((threads, LANES))
        build.library().conv_relu_pool_back(_ptr(x), _ptr(gy), _ptr(y), _ptr(idx), _ptr(gw), _ptr(gb),
                                            n, h, w, c, k, threads)
        grad_w = gw.sum(0)[:, :c].t().reshape(c, 1, k, k)
        return None, grad_w.contiguous(memory_format=layout), gb.sum(0)[:c].clone()


class _ConvPooled(torch.autograd.Function):
    """oneDNN's convolution, then relu_pool; the backward over the pooled maxima alone."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        conv = torch.nn.functional.conv2d(x, weight, bias).contiguous(memory_format=CL)
        y, idx = _relu_pool(conv)
        ctx.save_for_backward(x, weight, y, idx)
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx, gy: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor, torch.Tensor]:
        x, weight, y, idx = ctx.saved_tensors
        n, ci, h, w = x.shape
        co, k = weight.shape[0], weight.shape[-1]
        threads = torch.get_num_threads()
        gy = gy.contiguous(memory_format=CL)
        gx = torch.empty((n, ci, h, w), memory_format=CL) if ctx.needs_input_grad[0] else None
        gw = torch.empty((threads, co, k * k, LANES))
        gb = torch.empty((threads, co))
        wt = weight.detach().contiguous()
        if build.library().conv_back_pooled(_ptr(x), _ptr(wt), _ptr(gy), _ptr(y), _ptr(idx),
                                            _ptr(gx) if gx is not None else None, _ptr(gw), _ptr(gb),
                                            n, h, w, ci, co, k, threads):
            raise MemoryError("conv_relu_pool2x2: out of memory")
        grad_w = gw.sum(0)[:, :, :ci].permute(0, 2, 1).reshape(co, ci, k, k)
        return gx, grad_w.contiguous(memory_format=_weight_layout(weight)), gb.sum(0)


class _ConvPoolRelu(torch.autograd.Function):
    """torch's convolution, max-pool and ReLU; the weight gradient over the pooled maxima alone."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, stride: int,
                pool: nn.MaxPool2d) -> torch.Tensor:
        conv = torch.nn.functional.conv2d(x, weight, bias, stride=stride)
        pooled, where = torch.nn.functional.max_pool2d(conv, pool.kernel_size, pool.stride,
                                                       ceil_mode=pool.ceil_mode, return_indices=True)
        y = torch.relu(pooled).contiguous(memory_format=CL)
        ctx.save_for_backward(x, y, where.contiguous(memory_format=CL))
        ctx.meta = (conv.shape[3], stride, weight.shape[-1], _weight_layout(weight))
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx, gy: torch.Tensor) -> tuple[None, torch.Tensor, torch.Tensor, None, None]:
        x, y, where = ctx.saved_tensors
        wo, stride, k, layout = ctx.meta
        n, c, hp, wp = y.shape
        threads = torch.get_num_threads()
        gy = gy.contiguous(memory_format=CL)
        gw = torch.empty((threads, c, k, LANES))
        gb = torch.empty((threads, c))
        if build.library().conv_pool_back_indexed(_ptr(x), _ptr(gy), _ptr(y), _ptr(where), _ptr(gw),
                                                  _ptr(gb), n, x.shape[2], x.shape[3], wo, hp * wp, c,
                                                  k, stride, threads):
            raise MemoryError("conv_pool_relu: out of memory")
        grad_w = gw.sum(0)[:, :, :k].reshape(c, 1, k, k)
        return None, grad_w.contiguous(memory_format=layout), gb.sum(0), None, None


def conv_pool_relu(x: torch.Tensor, conv: nn.Conv2d, pool: nn.MaxPool2d) -> torch.Tensor:
    """`conv`, `pool`, then ReLU: the kernel's backward where it takes them (`conv_pool_relu_takes`)."""
    if conv_pool_relu_takes(x, conv, pool):
        return _ConvPoolRelu.apply(x, conv.weight, conv.bias, conv.stride[0], pool)
    return torch.relu(pool(conv(x)))


def conv_relu_pool2x2(x: torch.Tensor, conv: nn.Conv2d) -> torch.Tensor:
    """`conv`, ReLU, then a 2x2 stride-2 max-pool: the kernels where they take `x` and `conv`."""
    if conv_relu_pool_takes(x, conv):
        if _one_pass(x, conv):
            return _ConvReluPool.apply(x, conv.weight, conv.bias)
        return _ConvPooled.apply(x, conv.weight, conv.bias)
    return torch.nn.functional.max_pool2d(torch.relu(conv(x)), 2)
