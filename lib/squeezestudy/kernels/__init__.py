"""Compiled CPU kernels for the operations torch runs slowly at this study's sizes.

LeNet's first maps have 6 channels: torch's channels_last max-pool vectorizes over channels and
runs a scalar loop there, and its one-input-channel convolution writes a 3.5 MB map (a batch of
256) that ReLU and the pool then read again. `conv_pool.c` computes convolution, ReLU and pool in
one pass; for the second convolution, ReLU and pool after oneDNN's forward, and a backward that
sums over the pooled maxima alone, where the gradient is not zero; and for the one-Fire
SqueezeNet's conv1 (96 channels, 7x7, stride 2) and its 3x3 pool, torch's forward and a weight
gradient over the pooled maxima alone (`ops`). `build` compiles it on first use and says why
where it cannot; the models fall back to torch's operations then, and where a hook or a tracer
would miss the fused modules (`models.lenet`, `models.features`).
"""

from squeezestudy.kernels.build import KernelsUnavailable, available, status
from squeezestudy.kernels.ops import conv_pool_relu, conv_relu_pool2x2

__all__ = ["KernelsUnavailable", "available", "status", "conv_pool_relu", "conv_relu_pool2x2"]
