"""Tests of beyondbp.models: registry, output shapes, options, and refusals."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from beyondbp import data, models
from beyondbp.errors import ConfigError

TRAINABLE = (nn.Linear, nn.Conv1d, nn.Conv2d)


def test_names():
    assert models.names() == ["branch-elm", "cnn1d", "deep-linear", "elm", "gpt", "irnn", "lenet", "lsm", "lstm", "mlp",
                              "snn-cnn", "snn-mlp", "softhebb-conv", "softhebb-mlp", "wrnn"]


@pytest.mark.parametrize(
    "name, input_shape, batch_shape",
    [
        ("mlp", (1, 28, 28), (5, 1, 28, 28)),
        ("mlp", (40,), (5, 40)),
        ("mlp", (1, 8, 8), (5, 1, 8, 8)),
        ("lenet", (1, 28, 28), (5, 1, 28, 28)),
        ("lenet", (1, 32, 32), (5, 1, 32, 32)),
        ("lenet", (3, 32, 32), (5, 3, 32, 32)),
        ("lenet", (1, 20, 24), (5, 1, 20, 24)),
        ("cnn1d", (40,), (5, 40)),
        ("cnn1d", (40,), (5, 1, 40)),
        ("cnn1d", (2, 40), (5, 2, 40)),
        ("cnn1d", (2, 40), (5, 80)),
        ("cnn1d", (3,), (5, 3)),
    ],
)
def test_output_shape(name, input_shape, batch_shape):
    model = models.build(name, input_shape, 7)
    out = model(torch.randn(batch_shape))
    assert out.shape == (5, 7)
    assert model.input_shape == tuple(input_shape) and model.num_classes == 7
    out.sum().backward()
    for pname, param in model.named_parameters():
        assert param.grad is not None, pname


@pytest.mark.parametrize("name, input_shape", [("mlp", (1, 28, 28)), ("lenet", (1, 28, 28)), ("cnn1d", (40,))])
def test_only_standard_layers_hold_parameters(name, input_shape):
    model = models.build(name, input_shape, 10)
    assert isinstance(model, nn.Sequential)
    for module in model.modules():
        if any(True for _ in module.parameters(recurse=False)):
            assert isinstance(module, TRAINABLE), type(module)
    assert isinstance(list(model.children())[-1], nn.Linear)


def test_lenet_geometry():
    m28 = models.build("lenet", (1, 28, 28), 10)
    m32 = models.build("lenet", (1, 32, 32), 10)
    assert m28.conv1.padding == (2, 2) and m32.conv1.padding == (0, 0)
    for m in (m28, m32):
        assert (m.conv1.out_channels, m.conv1.kernel_size) == (6, (5, 5))
        assert (m.conv2.in_channels, m.conv2.out_channels) == (6, 16)
        assert (m.fc1.in_features, m.fc1.out_features) == (400, 120)
        assert (m.fc2.in_features, m.fc2.out_features) == (120, 84)
        assert m.out.in_features == 84
        assert isinstance(m.act1, nn.ReLU) and isinstance(m.pool1, nn.MaxPool2d)
    assert models.build("lenet", (3, 32, 32), 10).conv1.in_channels == 3
    assert isinstance(models.build("lenet", (1, 28, 28), 10, activation="tanh").act3, nn.Tanh)
    assert models.build("lenet", (1, 32, 32), 10, padding=2).fc1.in_features == 16 * 6 * 6


def test_lenet_refuses_tiny_images():
    with pytest.raises(ConfigError, match="8x8"):
        models.build("lenet", (1, 8, 8), 10)
    models.build("lenet", (1, 12, 12), 10)(torch.zeros(1, 1, 12, 12))  # the smallest that fits
    with pytest.raises(ConfigError):
        models.build("lenet", (1, 11, 11), 10)
    with pytest.raises(ConfigError, match="channels, height, width"):
        models.build("lenet", (784,), 10)


def test_cnn1d_geometry():
    m = models.build("cnn1d", (40,), 10)
    convs = [m.conv1, m.conv2, m.conv3]
    assert [c.kernel_size for c in convs] == [(5,), (3,), (3,)]
    assert all(c.stride == (2,) and c.padding == (1,) and c.out_channels == 25 for c in convs)
    assert m.conv1.in_channels == 1
    assert m.out.in_features == 125
    wide = models.build("cnn1d", (40,), 10, channels=8)
    assert wide.conv3.out_channels == 8 and wide.out.in_features == 40
    x = torch.randn(3, 40)
    assert torch.equal(m(x), m(x.unsqueeze(1)))


def test_cnn1d_refuses_images_and_short_inputs():
    with pytest.raises(ConfigError, match="cnn1d"):
        models.build("cnn1d", (1, 8, 8), 10)
    with pytest.raises(ConfigError, match="length"):
        models.build("cnn1d", (2,), 10)
    with pytest.raises(ConfigError, match="channels"):
        models.build("cnn1d", (40,), 10, channels=0)


def test_mlp_layers_and_names():
    m = models.build("mlp", (1, 28, 28), 10)
    assert [name for name, _ in m.named_children()] == ["flatten", "fc1", "act1", "fc2", "act2", "out"]
    assert (m.fc1.in_features, m.fc1.out_features) == (784, 256)
    assert (m.fc2.in_features, m.fc2.out_features) == (256, 256)
    assert (m.out.in_features, m.out.out_features) == (256, 10)


def test_mlp_widths():
    m = models.build("mlp", (40,), 10, widths=[64, 32, 16])
    linears = [mod for mod in m.modules() if isinstance(mod, nn.Linear)]
    assert [(l.in_features, l.out_features) for l in linears] == [(40, 64), (64, 32), (32, 16), (16, 10)]
    linear_only = models.build("mlp", (40,), 10, widths=())
    assert [name for name, _ in linear_only.named_children()] == ["flatten", "out"]
    assert linear_only(torch.randn(2, 40)).shape == (2, 10)


@pytest.mark.parametrize(
    "activation, cls",
    [("relu", nn.ReLU), ("tanh", nn.Tanh), ("sigmoid", nn.Sigmoid), ("gelu", nn.GELU), ("leaky_relu", nn.LeakyReLU)],
)
def test_mlp_activations(activation, cls):
    m = models.build("mlp", (10,), 3, widths=(8, 8), activation=activation)
    assert isinstance(m.act1, cls) and isinstance(m.act2, cls)


def test_mlp_bias_and_dropout():
    no_bias = models.build("mlp", (10,), 3, widths=(8,), bias=False)
    assert no_bias.fc1.bias is None and no_bias.out.bias is None
    dropped = models.build("mlp", (10,), 3, widths=(8, 8), dropout=0.5)
    assert isinstance(dropped.drop1, nn.Dropout) and dropped.drop1.p == 0.5
    x = torch.randn(64, 10)
    dropped.eval()
    assert torch.equal(dropped(x), dropped(x))
    dropped.train()
    torch.manual_seed(0)
    a = dropped(x)
    assert not torch.equal(a, dropped(x))
    assert not any(isinstance(mod, nn.Dropout) for mod in models.build("mlp", (10,), 3).modules())


def test_mlp_he_normal_init_matches_man_et_al():
    """init = he-normal: weights N(0, 2/fan_in), biases N(0, bias_std²) (the homeostatic-network
    authors' initialisation with bias_std = 1); the default stays PyTorch's (uniform, bounded by
    1/sqrt(fan_in))."""
    torch.manual_seed(0)
    he = models.build("mlp", (784,), 10, widths=(400, 300), activation="elu", init="he-normal", bias_std=1.0)
    for layer, fan_in in ((he.fc1, 784), (he.fc2, 400), (he.out, 300)):
        assert abs(layer.weight.std().item() / (2.0 / fan_in) ** 0.5 - 1) < 0.05
        assert abs(layer.weight.mean().item()) < 0.1 * (2.0 / fan_in) ** 0.5
    biases = torch.cat([he.fc1.bias, he.fc2.bias])
    assert 0.85 < biases.std().item() < 1.15 and biases.abs().max().item() > 2.0
    zero_bias = models.build("mlp", (784,), 10, widths=(80,), init="he-normal")
    assert torch.count_nonzero(zero_bias.fc1.bias) == 0
    torch.manual_seed(0)
    default = models.build("mlp", (784,), 10, widths=(400, 300))
    assert default.fc1.weight.abs().max().item() <= 1 / 784 ** 0.5
    assert default.fc1.bias.abs().max().item() <= 1 / 784 ** 0.5
    torch.manual_seed(0)
    again = models.build("mlp", (784,), 10, widths=(400, 300), activation="elu", init="he-normal", bias_std=1.0)
    assert all(torch.equal(a, b) for a, b in zip(he.parameters(), again.parameters(), strict=True))


def test_build_is_reproducible_under_seed():
    torch.manual_seed(0)
    a = models.build("lenet", (1, 28, 28), 10)
    torch.manual_seed(0)
    b = models.build("lenet", (1, 28, 28), 10)
    for (na, pa), (nb, pb) in zip(a.named_parameters(), b.named_parameters(), strict=True):
        assert na == nb and torch.equal(pa, pb)


@pytest.mark.parametrize(
    "name, opts, match",
    [
        ("mlp", {"activation": "swish"}, "activation"),
        ("mlp", {"widths": (0,)}, "widths"),
        ("mlp", {"widths": "256"}, "widths"),
        ("mlp", {"widths": 256}, "widths"),
        ("mlp", {"dropout": 1.0}, "dropout"),
        ("mlp", {"dropout": -0.1}, "dropout"),
        ("mlp", {"bias": 1}, "bias"),
        ("mlp", {"width": 64}, "width"),
        ("mlp", {"init": "xavier"}, "init"),
        ("mlp", {"init": "he-normal", "bias_std": -1.0}, "bias_std"),
        ("mlp", {"bias_std": 1.0}, "bias_std applies only with init = 'he-normal'"),
        ("lenet", {"channels": 6}, "channels"),
        ("lenet", {"activation": "softmax"}, "activation"),
        ("lenet", {"padding": -1}, "padding"),
        ("cnn1d", {"widths": (3,)}, "widths"),
        ("cnn1d", {"channels": 2.5}, "channels"),
    ],
)
def test_bad_options(name, opts, match):
    input_shape = (40,) if name != "lenet" else (1, 28, 28)
    with pytest.raises(ConfigError, match=match):
        models.build(name, input_shape, 10, **opts)


def test_unknown_model_lists_names():
    with pytest.raises(ConfigError) as info:
        models.build("resnet18", (1, 28, 28), 10)
    for name in models.names():
        assert name in str(info.value)


@pytest.mark.parametrize("input_shape", [(), (0, 28), (1.5,), "abc", None, (True,)])
def test_bad_input_shape(input_shape):
    with pytest.raises(ConfigError, match="input_shape"):
        models.build("mlp", input_shape, 10)


@pytest.mark.parametrize("num_classes", [0, -3, 2.0, True])
def test_bad_num_classes(num_classes):
    with pytest.raises(ConfigError, match="num_classes"):
        models.build("mlp", (4,), num_classes)


def test_options_listing():
    assert models.options("mlp") == {"widths": (256, 256), "activation": "relu", "bias": True, "dropout": 0.0,
                                     "init": "default", "bias_std": 0.0}
    assert models.options("cnn1d")["channels"] == 25
    assert "padding" in models.options("LeNet")


def test_models_fit_data_sets():
    ds = data.load("digits")
    model = models.build("mlp", ds.input_shape, ds.num_classes, widths=(32,))
    x, y = next(iter(ds.train_loader(16)))
    logits = model(x)
    assert logits.shape == (16, 10)
    loss = nn.functional.cross_entropy(logits, y)
    assert torch.isfinite(loss)
