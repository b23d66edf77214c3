"""U-Net shapes and channels, positional encoding values, checkpoints round trip."""

import math

import numpy as np
import pytest
import torch

from lightwork.errors import UserError
from lightwork.models import PRESETS, UNet, UNetConfig, load_model, positional_encoding, save_model
from lightwork.models.positional import fourier_matrix


def test_positional_encoding_channels_and_values():
    encoding3d = positional_encoding((4, 6, 5))
    encoding2d = positional_encoding((8, 6))
    assert encoding3d.shape == (3 + 64, 4, 6, 5)  # + 1 image channel = 68
    assert encoding2d.shape == (2 + 64, 8, 6)  # + 1 image channel = 67
    # coordinate channels: linspace(-1, 1) along their own axis
    assert torch.allclose(encoding3d[1, 0, :, 0], torch.linspace(-1, 1, 6))
    assert torch.allclose(encoding3d[0, :, 2, 3], torch.linspace(-1, 1, 4))
    # Fourier channels: sin/cos(2 pi B x) with x = linspace(0, 1, S, endpoint=False)
    b = (torch.randn(32, 2, generator=torch.Generator().manual_seed(42)) * 12).double()
    x = torch.tensor([3 / 8, 5 / 6], dtype=torch.float64)
    expected = torch.cat([torch.sin(2 * math.pi * b @ x), torch.cos(2 * math.pi * b @ x)]).float()
    assert torch.allclose(encoding2d[2:, 3, 5], expected, atol=1e-5)
    # at the origin the sines are 0 and cosines 1
    assert torch.allclose(encoding2d[2:34, 0, 0], torch.zeros(32), atol=1e-6)
    assert torch.allclose(encoding2d[34:, 0, 0], torch.ones(32))
    assert torch.equal(fourier_matrix(3), fourier_matrix(3))  # seed 42: deterministic


def test_unet_input_channels_match_paper():
    brain, cxr = UNet(PRESETS["brain"]), UNet(PRESETS["cxr"])
    assert brain.encoder[0][0][0].in_channels == 68 and brain.encoder[0][0][0].kernel_size == (3, 3, 3)
    assert cxr.encoder[0][0][0].in_channels == 67
    assert [stage[0][0].out_channels for stage in brain.encoder] == [32, 64, 128, 256, 320]
    assert [stage[0][0].out_channels for stage in cxr.encoder] == [32, 64, 128, 256, 512, 512, 512]
    assert brain.head.bias is None and brain.head.kernel_size == (1, 1, 1)


@pytest.mark.parametrize("shape,depth", [((20, 28, 20), 4), ((17, 9, 13), 3), ((100, 130), 6), ((33, 50), 4)])
def test_unet_any_spatial_shape(shape, depth):
    model = UNet(UNetConfig.from_depth(len(shape), depth=depth, base=2, cap=8))
    output = model(torch.randn(2, 1, *shape))
    assert output.shape == (2, 1, *shape)
    with pytest.raises(ValueError, match="expected"):
        model(torch.randn(2, 2, *shape))


def test_checkpoint_round_trip(tmp_path):
    model = UNet(PRESETS["tiny"]).eval()
    save_model(model, str(tmp_path / "best"))
    loaded = load_model(str(tmp_path / "best"))
    image = torch.from_numpy(np.random.default_rng(0).normal(size=(1, 1, 12, 10, 8)).astype(np.float32))
    assert not loaded.training
    assert torch.equal(loaded(image), model(image))
    with pytest.raises(UserError, match="missing: not a lightwork checkpoint"):
        load_model(str(tmp_path / "missing"))


@pytest.mark.parametrize("shape,stride", [((6, 7, 5), 1), ((9, 8), 1), ((9, 8, 6), 2)])
def test_first_convolution_equals_the_convolution_of_image_and_encoding_concatenated(shape, stride):
    """The encoding's half of the first convolution is computed once per batch: same outputs and
    gradients as convolving the concatenated [image, encoding] input with the same weights."""
    from lightwork.models.positional import EncodedInputConv2d, EncodedInputConv3d

    torch.manual_seed(0)
    dims = len(shape)
    conv_class, plain = (
        (EncodedInputConv3d, torch.nn.functional.conv3d)
        if dims == 3
        else (EncodedInputConv2d, torch.nn.functional.conv2d)
    )
    conv = conv_class(2 + dims + 64, 5, kernel_size=3, stride=stride, padding=1).double()
    image = torch.randn(3, 2, *shape, dtype=torch.float64, requires_grad=True)
    split = conv(image)
    concatenated = torch.cat([image, positional_encoding(shape).double()[None].expand(3, -1, *shape)], dim=1)
    whole = plain(concatenated, conv.weight, conv.bias, stride=stride, padding=1)
    assert torch.allclose(split, whole, atol=1e-12)
    weights = torch.randn_like(whole)
    split_grads = torch.autograd.grad((split * weights).sum(), [image, conv.weight, conv.bias])
    whole_grads = torch.autograd.grad((whole * weights).sum(), [image, conv.weight, conv.bias])
    for split_grad, whole_grad in zip(split_grads, whole_grads):
        assert torch.allclose(split_grad, whole_grad, atol=1e-10)
    assert list(conv.state_dict()) == ["weight", "bias"]
