"""Network registry (runtime-safe): rebuild a model folder's network from its manifest.

``build_network(name, args, in_channels, out_channels)`` with ``name`` one of ``NETWORKS``:

- ``unet``: the plain :class:`~oncloudn.runtime.unet.UNet`; ``args`` e.g.
  ``{"widths": [8, 16, 32, 64, 128], "upsample": "bilinear"}``.
- ``smp``: a segmentation-models-pytorch model, ``args`` e.g.
  ``{"arch": "Unet", "encoder_name": "resnet34", ...}``; built as
  ``getattr(smp, arch)(encoder_name=..., encoder_weights=None, in_channels=...,
  classes=..., **rest)``. smp is imported only when needed. The competition runtime has smp
  0.2.1: ``RUNTIME_VERIFIED_SMP`` lists the (arch, encoder) pairs whose state dicts saved with
  today's smp load into 0.2.1 and give the same outputs (``tests/runtime``).

Weights are the network's plain state dict; ``strip_weight_prefixes`` (the one place that
handles wrapper prefixes) is used both when a model folder is saved and when it is loaded.
"""

from collections.abc import Callable, Mapping
from typing import Any

from torch import nn

from .unet import UNet

# (arch, encoder_name) pairs whose state dicts, saved with today's smp, load into smp 0.2.1 and
# give the same outputs (tests/runtime/test_rt_smp_parity.py). Not in the list on purpose:
# efficientnet-b1/-b3 (efficientnet-pytorch 0.6.3 pads differently; use timm-efficientnet-*).
RUNTIME_VERIFIED_SMP: frozenset[tuple[str, str]] = frozenset(
    (arch, encoder)
    for arch in ("Unet", "UnetPlusPlus", "DeepLabV3Plus", "FPN")
    for encoder in (
        "resnet34",
        "resnet50",
        "efficientnet-b0",
        "mobilenet_v2",
        "timm-efficientnet-b0",
        "timm-efficientnet-b1",
    )
)


def _build_unet(args: dict[str, Any], in_channels: int, out_channels: int) -> nn.Module:
    return UNet(in_channels=in_channels, out_channels=out_channels, **args)


def _smp_import_hint(error: ImportError) -> str:
    """Say which module is missing: smp itself, or a module the installed smp imports."""
    missing = getattr(error, "name", None)
    if missing is None or missing == "segmentation_models_pytorch":
        return (
            f"network 'smp' needs segmentation-models-pytorch ({error}); install it with `pip "
            "install segmentation-models-pytorch`"
        )
    return (
        "network 'smp': segmentation-models-pytorch is installed but cannot import the module "
        f"{missing!r} it needs ({error}); install that package (for the runtime's smp 0.2.1 stack: "
        "`oncloudn runtime-env install --fresh`)"
    )


def _build_smp(args: dict[str, Any], in_channels: int, out_channels: int) -> nn.Module:
    args = dict(args)
    arch = args.pop("arch", "Unet")
    encoder_name = args.pop("encoder_name", "resnet34")
    args.pop("encoder_weights", None)  # never download weights: they come from the folder
    try:
        # lazy: optional in the zip: only smp networks need smp
        import segmentation_models_pytorch as smp
    except ImportError as error:
        raise ImportError(_smp_import_hint(error)) from None
    model_cls = getattr(smp, arch, None)
    if not isinstance(model_cls, type):
        raise ValueError(
            "smp {} has no architecture {!r}; e.g. Unet, UnetPlusPlus, DeepLabV3Plus, FPN".format(
                getattr(smp, "__version__", "?"), arch
            )
        )
    return model_cls(
        encoder_name=encoder_name,
        encoder_weights=None,
        in_channels=in_channels,
        classes=out_channels,
        **args,
    )


NETWORKS: dict[str, Callable[[dict[str, Any], int, int], nn.Module]] = {
    "unet": _build_unet,
    "smp": _build_smp,
}


def build_network(
    name: str, args: dict[str, Any], in_channels: int, out_channels: int
) -> nn.Module:
    """Build a network from its registry name and arguments (untrained weights).

    Args:
        name: A key of ``NETWORKS``.
        args: Keyword arguments of that builder (the manifest's ``architecture.args``).
        in_channels: Input bands.
        out_channels: Head channels.

    Raises:
        ValueError: Unknown name (the message lists the valid ones) or bad arguments.
    """
    if name not in NETWORKS:
        raise ValueError(
            "unknown network {!r}; choose one of: {}".format(name, ", ".join(sorted(NETWORKS)))
        )
    try:
        return NETWORKS[name](dict(args or {}), int(in_channels), int(out_channels))
    except TypeError as error:
        raise ValueError(f"network {name!r}: bad arguments {args} ({error})") from None


def smp_pair(args: dict[str, Any]) -> tuple[str, str]:
    """The ``(arch, encoder_name)`` of ``smp`` network arguments (with the builder defaults)."""
    return str(args.get("arch", "Unet")), str(args.get("encoder_name", "resnet34"))


# Key prefixes added by wrappers: DistributedDataParallel, a compiled module, CloudModel.
WEIGHT_PREFIXES = ("module.", "_orig_mod.", "network.")


def strip_weight_prefixes(
    state_dict: Mapping[str, Any], prefixes: tuple = WEIGHT_PREFIXES
) -> dict[str, Any]:
    """A state dict without wrapper prefixes (``module.``, ``_orig_mod.``, ``network.``).

    A prefix is removed only when every key carries it, and again as long as one applies, so
    nested wrappers (e.g. ``_orig_mod.module.network.``) unwrap fully while a network whose
    own layers merely start with such a name keeps its keys.
    """
    state = dict(state_dict)
    stripped = True
    while stripped and state:
        stripped = False
        for prefix in prefixes:
            if all(key.startswith(prefix) for key in state):
                state = {key[len(prefix) :]: value for key, value in state.items()}
                stripped = True
    return state


def load_network_state(network: nn.Module, state_dict: Mapping[str, Any], name: str) -> None:
    """Load a network's plain state dict into ``network`` (wrapper prefixes are tolerated).

    Args:
        network: The freshly built network.
        state_dict: Its weights, as saved in the model folder.
        name: The model's name, for the error message.

    Raises:
        ValueError: The weights do not match the architecture.
    """
    try:
        network.load_state_dict(strip_weight_prefixes(state_dict))
    except RuntimeError as error:
        raise ValueError(
            f"model {name!r}: weights do not match the manifest's architecture "
            f"({str(error).splitlines()[0]}); save the network's state_dict (not the "
            "wrapper's) with the architecture it was trained with"
        ) from None


def network_stride(network: nn.Module) -> int:
    """The number a network's input height and width must be multiples of.

    The plain U-Net declares it (``downsampling``); smp networks need ``2 ** encoder depth``;
    anything else is taken to accept any size (1).
    """
    stride = getattr(network, "downsampling", None)
    if stride:
        return int(stride)
    depth = getattr(getattr(network, "encoder", None), "_depth", None)
    return 2 ** int(depth) if depth else 1
