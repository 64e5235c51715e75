"""Batch-norm folding (runtime-safe): ``conv -> BatchNorm`` becomes one convolution.

At inference a ``BatchNorm2d`` after a convolution is an affine map per channel, so it can be
merged into the convolution's weights and bias: ``w' = w * s``, ``b' = (b - mean) * s + beta``
with ``s = gamma / sqrt(var + eps)``. Outputs agree with the unfolded network to float32
rounding (about 1e-6 relative). Works on any network whose convolutions and batch norms sit
next to each other in an ``nn.Sequential`` (the plain U-Net's blocks, smp's ``Conv2dReLU``).
"""

import copy

import torch
from torch import nn


def folded_conv(conv: nn.Conv2d, norm: nn.BatchNorm2d) -> nn.Conv2d:
    """A new convolution equal to ``norm(conv(x))`` in inference mode."""
    with torch.no_grad():
        scale = norm.weight / torch.sqrt(norm.running_var + norm.eps)
        bias = conv.bias if conv.bias is not None else torch.zeros_like(norm.running_mean)
        fused = nn.Conv2d(
            conv.in_channels,
            conv.out_channels,
            conv.kernel_size,
            stride=conv.stride,
            padding=conv.padding,
            dilation=conv.dilation,
            groups=conv.groups,
            bias=True,
            padding_mode=conv.padding_mode,
        )
        fused.weight.copy_(conv.weight * scale.reshape(-1, 1, 1, 1))
        fused.bias.copy_((bias - norm.running_mean) * scale + norm.bias)
    return fused


def _foldable(conv: nn.Module, norm: nn.Module) -> bool:
    return (
        type(conv) is nn.Conv2d
        and type(norm) is nn.BatchNorm2d
        and norm.affine
        and norm.track_running_stats
        and norm.running_var is not None
        and conv.out_channels == norm.num_features
    )


def fold_batchnorm(network: nn.Module) -> nn.Module:
    """A copy of ``network`` (in eval mode) with each ``Conv2d -> BatchNorm2d`` pair folded.

    A folded batch norm is replaced by ``nn.Identity``; pairs that are not adjacent in one
    ``nn.Sequential`` are left as they are.
    """
    network = copy.deepcopy(network).eval()
    for module in network.modules():
        if not isinstance(module, nn.Sequential):
            continue
        names = list(module._modules)
        for first, second in zip(names, names[1:]):
            conv, norm = module._modules[first], module._modules[second]
            if _foldable(conv, norm):
                module._modules[first] = folded_conv(conv, norm)
                module._modules[second] = nn.Identity()
    return network


def count_batchnorms(network: nn.Module) -> int:
    """Number of ``BatchNorm2d`` layers left in a network."""
    return sum(1 for module in network.modules() if isinstance(module, nn.BatchNorm2d))
