import pytest
import torch
import torchvision

from squeezestudy import models
from squeezestudy.models import Fire, summary


@pytest.mark.parametrize(("name", "kwargs", "params", "line"), [
    ("squeezenet_fmnist", {}, 18_010, "Number of parameter: 0.02M"),
    ("lenet", {}, 44_426, "Number of parameter: 0.04M"),
    ("alexnet", {"image_size": 112}, 24_744_650, "Number of parameter: 24.74M"),
    ("alexnet", {"image_size": 224}, 46_764_746, "Number of parameter: 46.76M"),
    ("squeezenet1_0", {}, 1_248_424, "Number of parameter: 1.25M"),
    ("squeezenet1_1", {}, 1_235_496, "Number of parameter: 1.24M"),
])
def test_parameter_counts(name, kwargs, params, line):
    model = models.build(name, **kwargs)
    assert summary.count_parameters(model) == params
    assert summary.parameter_line(model) == line


@pytest.mark.parametrize("version", ["1_0", "1_1"])
def test_torchvision_weights_give_identical_outputs(version):
    torch.manual_seed(0)
    theirs = getattr(torchvision.models, f"squeezenet{version}")(weights=None).eval()
    ours = models.build(f"squeezenet{version}").eval()
    assert summary.count_parameters(ours) == summary.count_parameters(theirs)
    models.load_torchvision_weights(ours, theirs.state_dict())
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        assert torch.equal(ours(x), theirs(x))


def test_torchvision_weights_refused_for_bypass_model():
    theirs = torchvision.models.squeezenet1_0(weights=None)
    with pytest.raises(ValueError, match="bypass"):
        models.load_torchvision_weights(models.build("squeezenet1_0", bypass="complex"),
                                        theirs.state_dict())


@pytest.mark.parametrize(("name", "kwargs", "shape"), [
    ("squeezenet_fmnist", {}, (3, 1, 28, 28)),
    ("lenet", {}, (3, 1, 28, 28)),
    ("alexnet", {}, (3, 1, 112, 112)),
    ("squeezenet1_0", {}, (3, 3, 224, 224)),
    ("squeezenet1_1", {}, (3, 3, 224, 224)),
    ("squeezenet1_0", {"num_classes": 10, "in_channels": 1}, (3, 1, 28, 28)),
])
def test_output_shapes(name, kwargs, shape):
    out = models.build(name, **kwargs).eval()(torch.randn(shape))
    assert out.shape == (3, kwargs.get("num_classes", 1000 if "squeezenet1" in name else 10))


def test_table1_output_sizes_v1_0():
    """The paper's Table 1 at its 227x227 Caffe input."""
    table = summary.layer_table(models.build("squeezenet1_0"), 227).set_index("layer")
    expected = {
        "conv1": "111x111x96", "maxpool1": "55x55x96", "fire2": "55x55x128",
        "fire3": "55x55x128", "fire4": "55x55x256", "maxpool4": "27x27x256",
        "fire5": "27x27x256", "fire6": "27x27x384", "fire7": "27x27x384",
        "fire8": "27x27x512", "maxpool8": "13x13x512", "fire9": "13x13x512",
        "conv10": "13x13x1000", "avgpool10": "1x1x1000",
    }
    assert table["output"].to_dict() == {**expected, "total": ""}
    assert table.loc["total", "params"] == 1_248_424
    assert table.loc["fire2", "params"] == 11_920
    # conv1: 111*111 outputs x 96 filters x 7*7*3 weights each
    assert table.loc["conv1", "mult_adds"] == 111 * 111 * 96 * 7 * 7 * 3


def test_layer_table_matches_flop_counter():
    from torch.utils.flop_counter import FlopCounterMode

    for name, size, ch in (("squeezenet1_1", 224, 3), ("alexnet", 112, 1), ("lenet", 28, 1)):
        model = models.build(name).eval()
        with FlopCounterMode(display=False) as counter:
            model(torch.zeros(1, ch, size, size))
        assert summary.total_mult_adds(model, size) * 2 == counter.get_total_flops()


def test_fmnist_squeezenet_repr_matches_the_note():
    text = repr(models.build("squeezenet_fmnist"))
    for layer in [
        "Conv2d(1, 96, kernel_size=(7, 7), stride=(2, 2))",
        "MaxPool2d(kernel_size=3, stride=2, padding=0, dilation=1, ceil_mode=True)",
        "(squeeze): Conv2d(96, 16, kernel_size=(1, 1), stride=(1, 1))",
        "(expand1x1): Conv2d(16, 64, kernel_size=(1, 1), stride=(1, 1))",
        "(expand3x3): Conv2d(16, 64, kernel_size=(3, 3), stride=(1, 1), padding=(1, 1))",
        "Dropout(p=0.5, inplace=False)",
        "Conv2d(128, 10, kernel_size=(1, 1), stride=(1, 1))",
        "AdaptiveAvgPool2d(output_size=(1, 1))",
    ]:
        assert layer in text
    assert text.count("Fire(") == 1


def test_fire_module():
    fire = Fire(96, 16, 64, 64)
    out = fire(torch.randn(2, 96, 5, 5))
    assert out.shape == (2, 128, 5, 5) and (out >= 0).all()
    assert summary.count_parameters(fire) == 96 * 16 + 16 + 16 * 64 + 64 + 16 * 64 * 9 + 64
    with pytest.raises(ValueError, match="squeeze must be at least 1"):
        Fire(96, 0, 64, 64)


def test_bypass_variants():
    vanilla = summary.count_parameters(models.build("squeezenet1_0"))
    simple = models.build("squeezenet1_0", bypass="simple")
    complex_ = models.build("squeezenet1_0", bypass="complex")
    assert summary.count_parameters(simple) == vanilla  # identity shortcuts are free
    # complex: 1x1 convs around fire2 (96->128), fire4 (128->256), fire6 (256->384), fire8 (384->512)
    extra = sum(i * o + o for i, o in ((96, 128), (128, 256), (256, 384), (384, 512)))
    assert summary.count_parameters(complex_) == vanilla + extra
    for m in (simple, complex_):
        assert m.eval()(torch.randn(1, 3, 224, 224)).shape == (1, 1000)
    with pytest.raises(ValueError, match="unknown bypass"):
        models.build("squeezenet1_0", bypass="fancy")


def test_registry_errors():
    with pytest.raises(models.UnknownModelError, match="known models: alexnet, lenet, squeezenet1_0"):
        models.build("resnet50")
    with pytest.raises(TypeError, match="model 'lenet'"):
        models.build("lenet", depth=3)
    with pytest.raises(ValueError, match="at least 63x63"):
        models.build("alexnet", image_size=28)


def test_metaparameters_rebuild_v1_0():
    """Section 5: base_e=128, incr_e=128, pct3x3=0.5, freq=2, SR=0.125 is SqueezeNet v1.0."""
    assert models.fire_sizes()[0] == (16, 64, 64) and models.fire_sizes()[-1] == (64, 256, 256)
    design = models.build("squeezenet_design", stem="imagenet", num_classes=1000, in_channels=3).eval()
    v10 = models.build("squeezenet1_0").eval()
    assert summary.count_parameters(design) == 1_248_424
    design.load_state_dict(dict(zip(design.state_dict(), v10.state_dict().values(), strict=True)))
    x = torch.randn(1, 3, 227, 227)
    with torch.no_grad():
        assert torch.equal(design(x), v10(x))
    table = summary.layer_table(design, 227).set_index("layer")
    assert table.loc["maxpool8", "output"] == "13x13x512"


def test_design_for_28x28_and_sweeps():
    # v1.0's proportions: Fire 2-4 at 1/4 of the input side, Fire 5-9 at 1/8 (28 -> 7 -> 3)
    table = summary.layer_table(models.build("squeezenet_design"), 28).set_index("layer")
    assert table.loc["conv1", "output"] == "14x14x96"
    assert table.loc["fire2", "output"] == "7x7x128"
    assert table.loc["fire5", "output"] == "3x3x256"
    assert table.loc["fire9", "output"] == "3x3x512"
    assert summary.count_parameters(models.build("squeezenet_design")) == 727_306
    small_sr = summary.count_parameters(models.build("squeezenet_design", sr=0.125))
    big_sr = summary.count_parameters(models.build("squeezenet_design", sr=1.0))
    assert big_sr > 3 * small_sr
    for pct in (0.01, 0.99):  # extremes of the paper's sweep still build and run
        out = models.build("squeezenet_design", pct3x3=pct).eval()(torch.randn(2, 1, 28, 28))
        assert out.shape == (2, 10)
    with pytest.raises(ValueError, match="pct3x3"):
        models.fire_sizes(pct3x3=1.5)


def test_squeeze_norm_is_a_labelled_variant_off_by_default():
    plain = models.build("squeezenet_design")
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in plain.modules())  # the paper's family
    normed = models.build("squeezenet_design", squeeze_norm=True)
    norms = [m for m in normed.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    fires = [m for m in normed.modules() if isinstance(m, Fire)]
    assert len(norms) == len(fires) == 8
    # one scale and one shift per squeeze filter, nothing else added
    squeezes = sum(f.squeeze.out_channels for f in fires)
    assert summary.count_parameters(normed) == summary.count_parameters(plain) + 2 * squeezes
    # the batch norm sits between the squeeze convolution and its ReLU
    fire = Fire(4, 2, 3, 3, squeeze_norm=True).train()
    x = torch.randn(16, 4, 5, 5)
    s = fire.squeeze(x)
    expected = torch.cat([fire.expand1x1_activation(fire.expand1x1(torch.relu(fire.squeeze_norm(s)))),
                          fire.expand3x3_activation(fire.expand3x3(torch.relu(fire.squeeze_norm(s))))], 1)
    assert torch.allclose(fire(x), expected)  # train mode: the batch's own statistics
