"""U-Net shapes and channels, positional encoding values, checkpoints round trip."""

import math

import numpy as np
import pytest
import torch

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
    with pytest.raises(FileNotFoundError, match="not a lightwork checkpoint"):
        load_model(str(tmp_path / "missing"))
