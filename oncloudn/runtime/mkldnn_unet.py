"""The plain U-Net on oneDNN (MKL-DNN) tensors (runtime-safe): a faster CPU forward pass.

On torch 1.8 (the competition runtime) an eager ``Conv2d`` on a plain NCHW CPU tensor converts
its input and output to oneDNN's blocked layout at every call, and channels-last is slower
still. :class:`MkldnnUNet` keeps the features in the blocked layout from the first
convolution to the head instead: batch norms are folded into the convolutions
(``fold.py``), every 3 x 3 convolution is a ``torch.utils.mkldnn`` module with its weights
reordered once, and the decoder never concatenates: ``conv(cat(up, skip))`` is computed as
``conv_up(up) + conv_skip(skip)`` (the same sum, split by input channels), so the large skip
tensors are never copied. Only the coarse up-sampling (bilinear interpolation, or the
transposed convolution) and the 1 x 1 head run on dense tensors. Outputs agree with the
plain U-Net to float32 rounding (summation order differs).
"""

from collections.abc import Sequence

import torch
import torch.nn.functional as F
import torch.utils.mkldnn as torch_mkldnn
from torch import nn

from .fold import fold_batchnorm
from .unet import UNet, space_to_depth, upsample_logits


def mkldnn_available() -> bool:
    """Whether this torch build can run oneDNN (MKL-DNN) tensors on the CPU."""
    return bool(torch.backends.mkldnn.is_available())


def _mkldnn_conv(conv: nn.Conv2d) -> nn.Module:
    return torch_mkldnn.to_mkldnn(conv)


def _split_conv(conv: nn.Conv2d, first_channels: int) -> tuple[nn.Conv2d, nn.Conv2d]:
    """Two convolutions whose outputs sum to ``conv(cat([a, b], 1))`` (``a`` has the bias)."""
    parts = []
    bounds = ((0, first_channels), (first_channels, conv.in_channels))
    for index, (start, stop) in enumerate(bounds):
        part = nn.Conv2d(
            stop - start, conv.out_channels, conv.kernel_size, padding=conv.padding, bias=index == 0
        )
        with torch.no_grad():
            part.weight.copy_(conv.weight[:, start:stop])
            if index == 0:
                part.bias.copy_(conv.bias)
        parts.append(part.eval())
    return parts[0], parts[1]


def _convs(block: nn.Sequential) -> list[nn.Conv2d]:
    convs = [module for module in block if isinstance(module, nn.Conv2d)]
    if len(convs) != 2:
        raise ValueError(f"expected a DoubleConv with 2 convolutions, got {len(convs)}")
    return convs


class MkldnnUNet(nn.Module):
    """A :class:`~oncloudn.runtime.unet.UNet` rebuilt for oneDNN tensors (inference only).

    Args:
        unet: A plain U-Net (its weights are copied, folded and reordered; it is not changed).

    Raises:
        ValueError: Not a plain U-Net, or a batch norm that could not be folded.
    """

    def __init__(self, unet: UNet):
        super().__init__()
        if not isinstance(unet, UNet):
            raise ValueError(f"MkldnnUNet needs the plain UNet, got {type(unet).__name__}")
        folded = fold_batchnorm(unet)
        if any(isinstance(m, nn.BatchNorm2d) for m in folded.modules()):
            raise ValueError("MkldnnUNet: a batch norm could not be folded into its convolution")
        self.widths: Sequence[int] = list(unet.widths)
        self.downsampling = unet.downsampling
        self.space_to_depth = unet.space_to_depth
        self.encoders = nn.ModuleList(
            nn.ModuleList(_mkldnn_conv(conv) for conv in _convs(block)) for block in folded.encoders
        )
        self.ups = nn.ModuleList()
        self.decoders = nn.ModuleList()
        for index, decoder in enumerate(folded.decoders):
            skip_channels = self.widths[len(self.widths) - 2 - index]
            first, second = _convs(decoder.conv)
            conv_up, conv_skip = _split_conv(first, first.in_channels - skip_channels)
            self.ups.append(decoder.up if decoder.up is not None else nn.Identity())
            convs = [_mkldnn_conv(conv) for conv in (conv_up, conv_skip, second)]
            self.decoders.append(nn.ModuleList(convs))
        self.head = folded.head
        self.eval()

    def check_input_shape(self, x: torch.Tensor) -> None:
        """Raise a ValueError unless H and W are divisible by the network's down-sampling."""
        UNet.check_input_shape(self, x)  # type: ignore[arg-type]

    def _up(self, index: int, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        up = self.ups[index]
        dense = x.to_dense()
        if isinstance(up, nn.Identity):
            dense = F.interpolate(dense, size=skip.shape[-2:], mode="bilinear", align_corners=False)
        else:
            dense = up(dense)
        return dense.contiguous().to_mkldnn()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Raw logits ``[N, out_channels, H, W]`` (a dense tensor) of a dense input."""
        self.check_input_shape(x)
        size = x.shape[-2:]
        x = space_to_depth(x.float(), self.space_to_depth).contiguous().to_mkldnn()
        skips = []
        for index, (first, second) in enumerate(self.encoders):
            if index:
                x = F.max_pool2d(x, 2)
            x = torch.relu_(second(torch.relu_(first(x))))
            skips.append(x)
        skips.pop()
        for index, (conv_up, conv_skip, second) in enumerate(self.decoders):
            skip = skips.pop()
            y = conv_up(self._up(index, x, skip)) + conv_skip(skip)
            x = torch.relu_(second(torch.relu_(y)))
        return upsample_logits(self.head(x.to_dense()), size)
