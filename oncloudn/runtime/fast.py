"""The fast CPU path of prediction (runtime-safe): one call turns a loaded model into a faster one.

:func:`accelerate_model` rebuilds every torch network inside a loaded model (a
``CloudModel``, or the members of an ensemble; other kinds are returned as they are) in one
of the :data:`FAST_LAYOUTS`, always with batch norms folded into the convolutions:

- ``mkldnn``: the plain U-Net on oneDNN tensors (``mkldnn_unet.py``); the fastest layout on
  torch 1.8, the competition runtime's version;
- ``channels_last``: the network and its input in channels-last memory order (fast on recent
  torch, slower than plain NCHW on torch 1.8);
- ``jit``: ``torch.jit.trace`` + ``torch.jit.freeze`` per input shape (any network);
- ``plain``: batch norms folded only (the choice on CUDA).

``auto`` picks ``mkldnn`` for the plain U-Net and ``jit`` for other networks on torch 1.x,
``channels_last`` on torch 2 and later (measured on torch 1.8.0 and 2.14, 2 CPU cores;
README, "Speed: fast path, export, bench"). The fast model is checked against the original
on a small random chip before it is used: if any logit differs by more than
:data:`SELF_CHECK_ATOL` (or anything fails), the original model is kept and the reason
logged, so the fast path can never cost a submission its masks.
"""

import logging
import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from .fold import fold_batchnorm
from .mkldnn_unet import MkldnnUNet, mkldnn_available
from .models import CloudModel, EnsembleModel
from .networks import network_stride
from .unet import UNet

LOGGER = logging.getLogger(__name__)

FAST_LAYOUTS = ("auto", "mkldnn", "channels_last", "jit", "plain", "off")
# Largest logit difference the self-check accepts between the fast and the original network.
SELF_CHECK_ATOL = 1e-3
SELF_CHECK_SIDE = 64


def torch_major() -> int:
    """The major version of the running torch (``1`` for 1.8.0)."""
    try:
        return int(str(torch.__version__).split(".")[0])
    except ValueError:
        return 0


def resolve_layout(layout: str, network: nn.Module, device: str = "cpu") -> str:
    """The concrete layout ``auto`` (or a given layout) means for ``network`` on ``device``.

    Raises:
        ValueError: An unknown layout (the message lists the valid ones).
    """
    if layout not in FAST_LAYOUTS:
        raise ValueError(
            "unknown fast layout {!r}; choose one of: {}".format(layout, ", ".join(FAST_LAYOUTS))
        )
    if layout != "auto":
        return layout
    if not str(device).startswith("cpu"):
        return "plain"
    if torch_major() >= 2:
        return "channels_last"
    if isinstance(network, UNet) and mkldnn_available():
        return "mkldnn"
    return "jit"


class ChannelsLastNetwork(nn.Module):
    """A (folded) network run in channels-last memory order; outputs come back contiguous."""

    def __init__(self, network: nn.Module):
        super().__init__()
        self.network = network.to(memory_format=torch.channels_last).eval()
        self.downsampling = network_stride(network)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.network(x.contiguous(memory_format=torch.channels_last))
        return out.contiguous()


class TracedNetwork(nn.Module):
    """A (folded) network traced and frozen with TorchScript, once per input shape."""

    def __init__(self, network: nn.Module):
        super().__init__()
        self.network = network.eval()
        self.downsampling = network_stride(network)
        self.traced: dict[tuple, Any] = {}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        key = (tuple(x.shape), x.dtype, str(x.device))
        module = self.traced.get(key)
        if module is None:
            with torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore")  # TracerWarnings of shape checks
                module = torch.jit.freeze(torch.jit.trace(self.network, x).eval())
            self.traced[key] = module
        return module(x)


_BUILDERS: dict[str, Callable[[nn.Module], nn.Module]] = {
    "mkldnn": MkldnnUNet,
    "channels_last": lambda network: ChannelsLastNetwork(fold_batchnorm(network)),
    "jit": lambda network: TracedNetwork(fold_batchnorm(network)),
    "plain": fold_batchnorm,
}


def accelerate_network(network: nn.Module, layout: str = "auto", device: str = "cpu"):
    """``(fast network, layout used)`` of a network (the original is not changed).

    Raises:
        ValueError: An unknown layout, or ``mkldnn`` for a network that is not the plain U-Net.
    """
    used = resolve_layout(layout, network, device)
    if used == "off":
        return network, used
    if used == "mkldnn" and not mkldnn_available():
        raise ValueError("layout 'mkldnn' needs a torch build with oneDNN (MKL-DNN)")
    fast = _BUILDERS[used](network)
    return fast.to(device).eval(), used


def _check_input(model: CloudModel, device: str) -> torch.Tensor:
    side = max(SELF_CHECK_SIDE, model.input_multiple)
    side = -(-side // model.input_multiple) * model.input_multiple
    generator = torch.Generator().manual_seed(0)
    raw = torch.randint(1, 10000, (1, len(model.bands), side, side), generator=generator)
    return raw.float().to(device)


def _accelerate_cloud_model(model: CloudModel, layout: str, device: str) -> tuple[Any, str]:
    network, used = accelerate_network(model.network, layout, device)
    if used == "off":
        return model, used
    fast = CloudModel(network, model.manifest)
    fast.input_multiple = model.input_multiple
    raw = _check_input(model, device)
    with torch.no_grad():
        difference = float((fast.logits(raw) - model.logits(raw)).abs().max())
    if not difference <= SELF_CHECK_ATOL:
        raise ValueError(
            f"self-check: logits differ by {difference:.3g} (> {SELF_CHECK_ATOL:g}) from the "
            "original network"
        )
    return fast, used


def accelerate_model(model: Any, device: str = "cpu", layout: str = "auto") -> tuple[Any, str]:
    """``(model, layout)``: ``model`` with its torch networks rebuilt for fast inference.

    Never raises for a model it cannot speed up: it logs why and returns the original (layout
    ``off``). Models without torch networks (threshold rule, ONNX sessions) come back as
    they are. An ensemble's members are accelerated one by one.

    Args:
        model: A loaded model (``load_model``).
        device: The device the model lives on.
        layout: One of :data:`FAST_LAYOUTS` (``off``: return the model unchanged).

    Raises:
        ValueError: An unknown layout.
    """
    if layout not in FAST_LAYOUTS:
        raise ValueError(
            "unknown fast layout {!r}; choose one of: {}".format(layout, ", ".join(FAST_LAYOUTS))
        )
    if layout == "off":
        return model, "off"
    if isinstance(model, EnsembleModel):
        results = [accelerate_model(member, device, layout) for member in model.members]
        members = [member for member, _ in results]
        used = "+".join(sorted({name for _, name in results}))
        return EnsembleModel(members, model.weights, model.bands, model.manifest), used
    if not isinstance(model, CloudModel):
        return model, "off"
    try:
        fast, used = _accelerate_cloud_model(model, layout, device)
    except Exception as error:  # noqa: BLE001 - the plain model always works
        LOGGER.warning("fast path not used for %r: %s", model.manifest.name, error)
        return model, "off"
    LOGGER.info("fast path for %r: layout %s", model.manifest.name, used)
    return fast, used


def default_batch_size(device: str) -> int:
    """Chips per forward pass: 8 on CUDA; 2 on a CPU (larger batches gain nothing there)."""
    return 8 if str(device).startswith("cuda") else 2
