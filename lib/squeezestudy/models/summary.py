"""Layer tables, parameter counts and model sizes, measured from real forward passes."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import torch
from torch import nn

from .fire import Bypass, Fire

# Parameter-free layers left out of the table by default (the paper's Table 1 lists none).
QUIET_LAYERS = (nn.ReLU, nn.Sigmoid, nn.Tanh, nn.Dropout, nn.Flatten, nn.Identity)
UNITS = (Fire, Bypass)  # shown as one row, as in the paper


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def parameter_line(model: nn.Module) -> str:
    """The note's one-line summary: `Number of parameter: 0.02M`."""
    return f"Number of parameter: {count_parameters(model) / 1e6:.2f}M"


def _macs(module: nn.Module, inputs: tuple, output: torch.Tensor) -> int:
    if isinstance(module, nn.Conv2d):
        per_output = module.in_channels // module.groups * module.kernel_size[0] * module.kernel_size[1]
        return output.numel() * per_output
    if isinstance(module, nn.Linear):
        return output.numel() * module.in_features
    return 0


@dataclass
class _Row:
    name: str
    kind: str
    output: tuple[int, ...]
    params: int
    macs: int


def _units(model: nn.Module):
    """Leaf modules, with Fire / Bypass modules kept whole."""
    def walk(module: nn.Module, prefix: str):
        for name, child in module.named_children():
            full = f"{prefix}.{name}" if prefix else name
            if isinstance(child, UNITS) or not any(True for _ in child.children()):
                yield full, child
            else:
                yield from walk(child, full)
    yield from walk(model, "")


@torch.no_grad()
def layer_table(model: nn.Module, image_size: int | tuple[int, int], in_channels: int | None = None,
                show_all: bool = False) -> pd.DataFrame:
    """Per layer: output shape (H x W x C, as the paper writes it), parameters and
    multiply-adds for one image, from forward hooks on a real forward pass.
    The last row holds the totals over the whole model."""
    if isinstance(image_size, int):
        image_size = (image_size, image_size)
    if in_channels is None:
        first_conv = next(m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear)))
        in_channels = getattr(first_conv, "in_channels", None) or first_conv.in_features
    units = list(_units(model))
    unit_of = {}
    for name, unit in units:
        for sub in unit.modules():
            unit_of.setdefault(id(sub), name)
    macs = {name: 0 for name, _ in units}
    outputs: dict[str, tuple[int, ...]] = {}
    hooks = []

    def leaf_hook(module, inputs, output):
        macs[unit_of[id(module)]] += _macs(module, inputs, output)

    def unit_hook(name):
        def hook(module, inputs, output):
            outputs[name] = tuple(output.shape[1:])
        return hook

    for name, unit in units:
        hooks.append(unit.register_forward_hook(unit_hook(name)))
        for sub in unit.modules():
            if isinstance(sub, (nn.Conv2d, nn.Linear)):
                hooks.append(sub.register_forward_hook(leaf_hook))
    was_training = model.training
    model.eval()
    try:
        device = next(model.parameters()).device
        model(torch.zeros(1, in_channels, *image_size, device=device))
    finally:
        model.train(was_training)
        for h in hooks:
            h.remove()

    rows = []
    for name, unit in units:
        if name not in outputs:
            continue  # a module the forward pass never reached
        if isinstance(unit, QUIET_LAYERS) and not show_all:
            continue
        shape = outputs[name]
        rows.append(_Row(name.split(".")[-1], type(unit).__name__, shape,
                         count_parameters(unit), macs[name]))
    table = pd.DataFrame([{
        "layer": r.name,
        "type": r.kind,
        "output": _format_shape(r.output),
        "params": r.params,
        "mult_adds": r.macs,
    } for r in rows])
    total = {"layer": "total", "type": "", "output": "", "params": count_parameters(model),
             "mult_adds": int(sum(macs.values()))}
    return pd.concat([table, pd.DataFrame([total])], ignore_index=True)


def _format_shape(shape: tuple[int, ...]) -> str:
    if len(shape) == 3:  # C, H, W -> the paper's H x W x C
        c, h, w = shape
        return f"{h}x{w}x{c}"
    return "x".join(str(s) for s in shape)


def total_mult_adds(model: nn.Module, image_size: int, in_channels: int | None = None) -> int:
    return int(layer_table(model, image_size, in_channels).iloc[-1]["mult_adds"])


def weight_bytes(num_params: int, bits: int = 32) -> int:
    """Whole bytes of the weights alone, packed at a given bit width (fp32: 4 a parameter)."""
    return (num_params * bits + 7) // 8


def size_mb(num_params: int, bits: int = 32) -> float:
    """Model size in MB (10^6 bytes) at a given bit width, parameters only."""
    return num_params * bits / 8 / 1e6
