"""models.dropout: torch's dropout law at p = 0.5 with a faster CPU mask, torch's own elsewhere."""

import math

import pytest
import torch
from torch import nn

from squeezestudy import models
from squeezestudy.models.dropout import Dropout, half_mask, stock


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("channels_last", [False, True])
def test_the_mask_keeps_each_element_with_chance_one_half_and_doubles_it(dtype, channels_last):
    x = torch.rand(64, 48, 5, 7, dtype=dtype) + 0.5  # no zeros: a zero out means dropped
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    torch.manual_seed(0)
    y = Dropout(0.5).train()(x)
    assert y.dtype == dtype and y.stride() == x.stride()
    kept = y != 0
    assert torch.equal(y[kept], 2 * x[kept])
    n = x.numel()  # 107,520 fair coins: the kept share within 5 standard deviations of 1/2
    assert abs(kept.sum().item() / n - 0.5) < 5 * math.sqrt(0.25 / n)


def test_the_bits_of_a_byte_are_used_alike_and_independently():
    torch.manual_seed(1)
    flat = half_mask(torch.empty(8 * 40_000)).view(-1, 8) / 2  # row: one random byte's bits
    n = flat.shape[0]
    for position in range(8):  # each bit of the byte kept half of the time
        assert abs(flat[:, position].mean().item() - 0.5) < 5 * math.sqrt(0.25 / n)
    # neighbours, within a byte and across bytes, are uncorrelated
    for a, b in [(flat[:, 0], flat[:, 1]), (flat[:, 7], flat[:, 3]), (flat[:-1, 7], flat[1:, 0])]:
        corr = torch.corrcoef(torch.stack([a, b]))[0, 1].item()
        assert abs(corr) < 5 / math.sqrt(n)


def test_the_gradient_is_the_mask_and_a_seed_repeats_it():
    x = torch.randn(32, 16, 3, 3, requires_grad=True)
    torch.manual_seed(3)
    y = Dropout(0.5)(x)
    y.sum().backward()
    assert torch.equal(x.grad, (y != 0).float() * 2)
    torch.manual_seed(3)
    assert torch.equal(Dropout(0.5)(x), y)
    torch.manual_seed(4)
    assert not torch.equal(Dropout(0.5)(x), y)


@pytest.mark.parametrize("case", ["p=0.3", "inplace", "not dense", "eval"])
def test_anything_else_is_torchs_own_dropout(case):
    x = torch.randn(16, 8, 6, 6)
    p, inplace = (0.3, False) if case == "p=0.3" else (0.5, case == "inplace")
    if case == "not dense":
        x = x[:, :, ::2]
    ours, theirs = Dropout(p, inplace=inplace), nn.Dropout(p, inplace=inplace)
    if case == "eval":
        ours.eval(), theirs.eval()
    torch.manual_seed(5)
    a = ours(x.clone() if inplace else x)
    torch.manual_seed(5)
    assert torch.equal(a, theirs(x.clone() if inplace else x))


def test_the_models_use_it_and_stock_puts_torchs_back():
    model = models.build("squeezenet_fmnist")
    assert isinstance(model.classifier.dropout, Dropout)
    assert repr(model.classifier.dropout) == "Dropout(p=0.5, inplace=False)"
    alexnet = models.build("alexnet")
    assert all(isinstance(getattr(alexnet.classifier, k), Dropout) for k in ("dropout6", "dropout7"))
    keys = list(alexnet.state_dict())
    stock(alexnet)
    found = [m for m in alexnet.modules() if isinstance(m, nn.Dropout)]
    assert len(found) == 2 and all(type(m) is nn.Dropout and m.p == 0.5 for m in found)
    assert list(alexnet.state_dict()) == keys
