"""Model registry for training: build a :class:`CloudModel` from a config's ``model`` section.

The model carries its ``kind: network`` manifest from construction (:func:`model_manifest`),
so the trainer saves that manifest rather than deriving another one from the config.

Names are validated up front with helpful errors (valid smp architectures are listed; a
misspelt encoder gets close matches). Nothing is downloaded: ``encoder_weights`` is ``None``
(random init) or a local file holding the encoder's state dict.
"""

from __future__ import annotations

import difflib
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from oncloudn.config import ModelConfig, NormalizationConfig
from oncloudn.errors import ConfigError
from oncloudn.runtime import heads
from oncloudn.runtime.manifest import Manifest
from oncloudn.runtime.models import CloudModel
from oncloudn.runtime.networks import NETWORKS, RUNTIME_VERIFIED_SMP, build_network, smp_pair

logger = logging.getLogger(__name__)


def head_spec(head: str) -> dict[str, Any]:
    """The manifest head dict of a config head name (``oncloudn.runtime.heads.HEAD_SPECS``).

    Raises:
        ConfigError: An unknown head name.
    """
    try:
        return heads.head_spec(head)
    except ValueError as error:
        raise ConfigError(f"model.head: {error}") from None


def smp_architectures() -> list[str]:
    """Architecture class names of the installed smp (e.g. ``Unet``, ``FPN``)."""
    # lazy: smp is heavy (timm); only listing its names needs it
    import segmentation_models_pytorch as smp

    return sorted(cls.__name__ for cls in smp.MODEL_ARCHITECTURES_MAPPING.values())


def smp_encoders() -> list[str]:
    """Encoder names of the installed smp."""
    # lazy: smp is heavy (timm); only listing its names needs it
    from segmentation_models_pytorch.encoders import get_encoder_names

    return sorted(get_encoder_names())


def validate_model_config(config: ModelConfig) -> None:
    """Check network, smp architecture/encoder and head names.

    Raises:
        ConfigError: An unknown name, with the valid choices or close matches.
    """
    if config.network not in NETWORKS:
        raise ConfigError(
            f"unknown model.network {config.network!r}; "
            f"choose one of: {', '.join(sorted(NETWORKS))}"
        )
    head_spec(config.head)
    if config.network != "smp":
        return
    arch, encoder = smp_pair(config.args)
    archs = smp_architectures()
    if arch not in archs:
        close = difflib.get_close_matches(arch, archs, n=3, cutoff=0.5)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise ConfigError(f"unknown smp arch {arch!r}{hint}; valid archs: {', '.join(archs)}")
    encoders = smp_encoders()
    if encoder not in encoders:
        close = difflib.get_close_matches(encoder, encoders, n=5, cutoff=0.5)
        hint = f"did you mean {', '.join(close)}?" if close else f"{len(encoders)} encoders exist"
        raise ConfigError(
            f"unknown smp encoder_name {encoder!r}; {hint} (list them with "
            "segmentation_models_pytorch.encoders.get_encoder_names())"
        )
    if (arch, encoder) not in RUNTIME_VERIFIED_SMP:
        logger.warning(
            "smp %s/%s is not verified to load in the competition runtime's smp 0.2.1 "
            "(verified: %s); it may not be packable",
            arch,
            encoder,
            ", ".join(f"{a}/{e}" for a, e in sorted(RUNTIME_VERIFIED_SMP)),
        )


def _adapt_input_conv(value: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Repeat a first convolution's input-channel weights to a new channel count."""
    repeats = -(-target.shape[1] // value.shape[1])
    adapted = value.repeat(1, repeats, 1, 1)[:, : target.shape[1]]
    return adapted * (value.shape[1] / target.shape[1])


def load_encoder_weights(network: torch.nn.Module, path: str | Path) -> None:
    """Load a local encoder state dict into ``network.encoder``.

    A first convolution trained on a different number of channels (e.g. RGB ImageNet weights
    for 4 bands) is adapted by repeating its channels and rescaling, as smp does.

    Raises:
        FileNotFoundError: The file does not exist.
        ConfigError: The network has no encoder or the weights do not fit it.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"model.encoder_weights file {path} does not exist (never downloaded)"
        )
    encoder = getattr(network, "encoder", None)
    if encoder is None:
        raise ConfigError("model.encoder_weights needs an smp network (it has an encoder)")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    own = encoder.state_dict()
    for key, value in list(state.items()):
        target = own.get(key)
        if (
            target is not None
            and value.dim() == 4
            and value.shape != target.shape
            and value.shape[0] == target.shape[0]
            and value.shape[2:] == target.shape[2:]
        ):
            state[key] = _adapt_input_conv(value, target)
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    encoder.load_state_dict({k: v for k, v in state.items() if k in own}, strict=False)
    if len(missing) == len(own):
        raise ConfigError(f"{path}: no key matches the encoder's state dict (wrong file?)")
    if missing or unexpected:
        logger.warning(
            "%s: %d missing and %d unexpected encoder keys (e.g. %s)",
            path,
            len(missing),
            len(unexpected),
            (list(missing) + list(unexpected))[:3],
        )


def create_model(
    model_config: ModelConfig,
    bands: Sequence[str],
    normalization: NormalizationConfig | dict[str, Any] | None = None,
) -> CloudModel:
    """Build an untrained :class:`CloudModel` (raw DN in, 2-class logits out).

    Args:
        model_config: The config's ``model`` section.
        bands: Input bands (their count is the network's input channels).
        normalization: Input normalization applied inside the model (default reflectance).

    Raises:
        ConfigError: Unknown names or arguments the network does not accept.
    """
    validate_model_config(model_config)
    manifest = model_manifest(model_config, bands, normalization)
    args = dict(model_config.args)
    if "encoder_weights" in args:
        raise ConfigError(
            "set model.encoder_weights (a local file), not model.args.encoder_weights"
        )
    try:
        network = build_network(
            model_config.network, args, len(bands), heads.head_channels(manifest.head)
        )
    except (ValueError, TypeError, KeyError) as error:
        raise ConfigError(f"model {model_config.network} {args}: {error}") from None
    if model_config.encoder_weights:
        load_encoder_weights(network, model_config.encoder_weights)
    return CloudModel(network, manifest)


def model_manifest(
    model_config: ModelConfig,
    bands: Sequence[str],
    normalization: NormalizationConfig | dict[str, Any] | None = None,
) -> Manifest:
    """The ``kind: network`` manifest a model built from a config carries.

    It sets the architecture, bands, normalization and head; other fields keep their defaults.

    Raises:
        ConfigError: An unknown head name.
    """
    if isinstance(normalization, NormalizationConfig):
        normalization = {"name": normalization.name, "params": dict(normalization.params)}
    return Manifest(
        kind="network",
        architecture={"name": model_config.network, "args": dict(model_config.args)},
        bands=list(bands),
        normalization=dict(normalization or {"name": "reflectance", "params": {}}),
        head=head_spec(model_config.head),
    )
