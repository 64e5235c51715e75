"""A plain, configurable U-Net (runtime-safe): the ~490k-parameter student.

Each level is two ``conv3x3 -> BatchNorm -> ReLU`` blocks; the encoder halves the resolution
with a 2x2 max-pool, the decoder doubles it (bilinear up-sampling, or a transposed
convolution) and concatenates the encoder's skip features. With the default widths
``(8, 16, 32, 64, 128)`` and 4 input bands the network has 491,945 parameters (486,625
with ``upsample="transpose"``).

``space_to_depth=2`` folds each 2 x 2 block of pixels into channels before the first
convolution (4 bands become 16 channels at half the resolution, nothing is discarded), runs
the U-Net at half resolution and up-samples the logits bilinearly to the input's size: about a
quarter of the compute for 864 more parameters (492,809 with the default widths).
"""

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

UPSAMPLE_MODES = ("bilinear", "transpose")
SPACE_TO_DEPTH_FACTORS = (1, 2, 4)


def space_to_depth(x: torch.Tensor, factor: int) -> torch.Tensor:
    """Fold each ``factor x factor`` block of pixels into channels (``F.pixel_unshuffle`` order).

    ``[N, C, H, W] -> [N, C * factor**2, H / factor, W / factor]``; written with reshape and
    permute so that it traces and exports (ONNX, OpenVINO) on every torch version.
    """
    if factor == 1:
        return x
    n, c, h, w = x.shape
    x = x.reshape(n, c, h // factor, factor, w // factor, factor)
    return x.permute(0, 1, 3, 5, 2, 4).reshape(n, c * factor * factor, h // factor, w // factor)


def upsample_logits(logits: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Logits bilinearly up-sampled to ``size`` (``(H, W)``); unchanged when already that size."""
    if tuple(logits.shape[-2:]) == tuple(size):
        return logits
    return F.interpolate(logits, size=size, mode="bilinear", align_corners=False)


class DoubleConv(nn.Sequential):
    """Two ``conv3x3 -> BatchNorm -> ReLU`` blocks.

    Args:
        in_channels: Input channels.
        out_channels: Output channels of both convolutions.
    """

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__(
            nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )


class Up(nn.Module):
    """Up-sample by 2, concatenate the skip features, then a :class:`DoubleConv`.

    Args:
        in_channels: Channels of the deeper (coarser) features.
        skip_channels: Channels of the skip features.
        out_channels: Output channels.
        mode: ``bilinear`` (parameter-free) or ``transpose`` (2x2 transposed convolution to
            ``skip_channels`` channels).
    """

    def __init__(self, in_channels: int, skip_channels: int, out_channels: int, mode: str):
        super().__init__()
        self.mode = mode
        if mode == "transpose":
            self.up = nn.ConvTranspose2d(in_channels, skip_channels, 2, stride=2)
            merged = 2 * skip_channels
        else:
            self.up = None
            merged = in_channels + skip_channels
        self.conv = DoubleConv(merged, out_channels)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        if self.up is not None:
            x = self.up(x)
        else:
            x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
        return self.conv(torch.cat([x, skip], dim=1))


class UNet(nn.Module):
    """Plain U-Net returning raw logits ``[N, out_channels, H, W]``.

    Args:
        in_channels: Input bands (4 for B02, B03, B04, B08).
        out_channels: Output channels (1 for a sigmoid head, 2+ for softmax).
        widths: Channels per level, shallow to deep; ``len(widths) - 1`` down-samplings.
        upsample: ``bilinear`` (default) or ``transpose``.
        space_to_depth: 1 (default: full resolution), 2 or 4: fold ``factor x factor`` pixel
            blocks into channels first and up-sample the logits at the end.

    Raises:
        ValueError: Fewer than two widths, a non-positive width, an unknown ``upsample`` or
            ``space_to_depth``.
    """

    def __init__(
        self,
        in_channels: int = 4,
        out_channels: int = 1,
        widths: Sequence[int] = (8, 16, 32, 64, 128),
        upsample: str = "bilinear",
        space_to_depth: int = 1,
    ):
        super().__init__()
        widths = [int(w) for w in widths]
        if len(widths) < 2 or min(widths) < 1:
            raise ValueError(f"UNet widths must be two or more positive integers, got {widths}")
        if upsample not in UPSAMPLE_MODES:
            raise ValueError(
                "unknown upsample {!r}; choose one of: {}".format(
                    upsample, ", ".join(UPSAMPLE_MODES)
                )
            )
        if space_to_depth not in SPACE_TO_DEPTH_FACTORS:
            raise ValueError(
                "unknown space_to_depth {!r}; choose one of: {}".format(
                    space_to_depth, ", ".join(str(f) for f in SPACE_TO_DEPTH_FACTORS)
                )
            )
        self.widths = widths
        self.space_to_depth = int(space_to_depth)
        self.downsampling = self.space_to_depth * 2 ** (len(widths) - 1)
        self.encoders = nn.ModuleList()
        previous = in_channels * self.space_to_depth**2
        for width in widths:
            self.encoders.append(DoubleConv(previous, width))
            previous = width
        self.decoders = nn.ModuleList()
        for level in range(len(widths) - 1, 0, -1):
            self.decoders.append(Up(widths[level], widths[level - 1], widths[level - 1], upsample))
        self.head = nn.Conv2d(widths[0], out_channels, 1)

    def check_input_shape(self, x: torch.Tensor) -> None:
        """Raise a ValueError unless H and W are divisible by ``self.downsampling``.

        That is ``space_to_depth * 2 ** (len(widths) - 1)`` (16 for the default student).
        """
        height, width = int(x.shape[-2]), int(x.shape[-1])
        factor = self.downsampling
        if height % factor or width % factor:
            padded = (-(-height // factor) * factor, -(-width // factor) * factor)
            raise ValueError(
                f"Wrong input shape height={height}, width={width}: this UNet "
                f"({len(self.widths)} levels) needs height and width divisible by {factor}. "
                f"Pad the input, e.g. to {padded} (chips are 512 x 512, pad to 512)."
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input_shape(x)
        size = x.shape[-2:]
        x = space_to_depth(x, self.space_to_depth)
        skips: list[torch.Tensor] = []
        for index, encoder in enumerate(self.encoders):
            if index:
                x = F.max_pool2d(x, 2)
            x = encoder(x)
            skips.append(x)
        skips.pop()
        for decoder in self.decoders:
            x = decoder(x, skips.pop())
        return upsample_logits(self.head(x), size)


def count_parameters(module: nn.Module) -> int:
    """Number of parameters of a module: its weights, not its buffers.

    The one parameter count of the toolkit (``describe``, ``pack``, ``models compare``,
    ``bench``): batch-norm running statistics and other buffers are state, not parameters
    (the default student U-Net, space-to-depth 2, has 492,809 parameters; its state dict
    holds 494,299 values).
    """
    return sum(p.numel() for p in module.parameters())
