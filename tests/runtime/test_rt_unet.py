"""The plain runtime UNet: shapes, parameter count, input-size errors."""

import pytest
import torch
import torch.nn.functional as F

from oncloudn.runtime.unet import UNet, count_parameters, space_to_depth


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


@pytest.mark.parametrize("factor", [1, 2, 4])
def test_space_to_depth_is_pixel_unshuffle(factor: int) -> None:
    x = torch.rand(2, 3, 8, 12)
    expected = F.pixel_unshuffle(x, factor) if factor > 1 else x
    assert torch.equal(space_to_depth(x, factor), expected)


@pytest.mark.parametrize("factor", [2, 4])
def test_space_to_depth_unet_predicts_at_input_size(factor: int) -> None:
    model = UNet(4, 1, widths=(4, 8, 16), space_to_depth=factor).eval()
    assert model.downsampling == 4 * factor
    assert model.encoders[0][0].in_channels == 4 * factor * factor
    out = model(torch.rand(2, 4, 32, 48))
    assert out.shape == (2, 1, 32, 48)
    with pytest.raises(ValueError, match=f"divisible by {4 * factor}"):
        model(torch.rand(1, 4, 36, 48))


def test_space_to_depth_student_keeps_the_parameter_budget() -> None:
    # only the first convolution grows: 16 input channels instead of 4 (+ 9 * 12 * 8)
    assert count_parameters(UNet(space_to_depth=2)) == 491_945 + 9 * 12 * 8 == 492_809


def test_space_to_depth_unet_is_smooth_across_blocks() -> None:
    # the logits are up-sampled bilinearly, not repeated per 2 x 2 block
    torch.manual_seed(0)
    model = UNet(4, 1, widths=(4, 8, 16), space_to_depth=2).eval()
    with torch.no_grad():
        out = model(torch.rand(1, 4, 32, 32))[0, 0]
    assert not torch.equal(out[0::2, 0::2], out[1::2, 1::2])


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="two or more"):
        UNet(widths=(8,))
    with pytest.raises(ValueError, match="bilinear, transpose"):
        UNet(upsample="nearest")
    with pytest.raises(ValueError, match="space_to_depth 3; choose one of: 1, 2, 4"):
        UNet(space_to_depth=3)
