"""The plain runtime UNet: shapes, parameter count, input-size errors."""

import pytest
import torch

from oncloudn.runtime.unet import UNet, count_parameters


@pytest.mark.parametrize("upsample", ["bilinear", "transpose"])
@pytest.mark.parametrize("out_channels", [1, 3])
def test_output_shape(upsample: str, out_channels: int) -> None:
    model = UNet(4, out_channels, widths=(4, 8, 16), upsample=upsample).eval()
    out = model(torch.rand(2, 4, 32, 48))
    assert out.shape == (2, out_channels, 32, 48)


def test_default_parameter_count_is_the_students() -> None:
    # conv weights of the default (8, 16, 32, 64, 128) U-Net plus BatchNorm and head:
    # about 0.49 M, the size class of the seed paper's ~450k-parameter students.
    widths = (8, 16, 32, 64, 128)
    convs = 9 * (
        4 * 8 + sum(a * b + b * b for a, b in zip(widths[:-1], widths[1:], strict=True)) + 8 * 8
    )
    decoder = 9 * sum((a + b) * b + b * b for a, b in zip(widths[1:], widths[:-1], strict=True))
    batchnorm = 2 * 2 * (sum(widths) + sum(widths[:-1]))
    head = 8 + 1
    assert count_parameters(UNet()) == convs + decoder + batchnorm + head == 491_945


@pytest.mark.parametrize("size", [(500, 512), (512, 100)])
def test_size_not_divisible_says_pad(size) -> None:
    model = UNet()
    with pytest.raises(ValueError, match="divisible by 16.*pad to 512"):
        model(torch.zeros(1, 4, *size))


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="two or more"):
        UNet(widths=(8,))
    with pytest.raises(ValueError, match="bilinear, transpose"):
        UNet(upsample="nearest")
