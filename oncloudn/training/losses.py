"""Loss registry: weighted sums of smp losses on the binary cloud logit.

The trainer computes losses on the *binary cloud logit* ``z = logits[:, 1] - logits[:, 0]`` of
the model's 2-class output (clear, cloud). For a sigmoid head this is exactly the network's
raw output; for a 2-class softmax head ``softmax(logits)[:, 1] == sigmoid(z)``. Targets are
``{0, 1}`` with :data:`IGNORE_INDEX` where a pixel is invalid (nodata or ignored label).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from oncloudn.config import LossTerm
from oncloudn.errors import ConfigError
from oncloudn.runtime.bands import IGNORE_VALUE

IGNORE_INDEX = IGNORE_VALUE


def _bce(params: dict) -> nn.Module:
    # lazy: smp is heavy (timm); only its losses need it
    from segmentation_models_pytorch.losses import SoftBCEWithLogitsLoss

    return SoftBCEWithLogitsLoss(ignore_index=IGNORE_INDEX, **params)


def _smp_binary(class_name: str) -> Callable[[dict], nn.Module]:
    def factory(params: dict) -> nn.Module:
        # lazy: smp is heavy (timm); only its losses need it
        from segmentation_models_pytorch import losses

        return getattr(losses, class_name)(mode="binary", ignore_index=IGNORE_INDEX, **params)

    return factory


LOSSES: dict[str, Callable[[dict], nn.Module]] = {
    "bce": _bce,
    "dice": _smp_binary("DiceLoss"),
    "jaccard": _smp_binary("JaccardLoss"),
    "lovasz": _smp_binary("LovaszLoss"),
    "focal": _smp_binary("FocalLoss"),
}


class WeightedLoss(nn.Module):
    """A weighted sum of loss terms on ``[N, H, W]`` logits and ``[N, H, W]`` targets."""

    def __init__(self, terms: list[tuple[str, float, nn.Module]]) -> None:
        super().__init__()
        self.names = [name for name, _, _ in terms]
        self.weights = [weight for _, weight, _ in terms]
        self.losses = nn.ModuleList([module for _, _, module in terms])

    def forward(self, logit: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Loss of cloud logits ``[N, H, W]`` against targets in {0, 1, IGNORE_INDEX}.

        Targets must be float for BCE; the smp losses take them as given.
        """
        logit = logit.float().unsqueeze(1)
        target = target.float().unsqueeze(1)
        total = logit.new_zeros(())
        for weight, loss in zip(self.weights, self.losses, strict=True):
            if isinstance(loss, _bce_type()):
                # SoftBCEWithLogitsLoss masks ignored pixels and averages over all of them;
                # the ignored positions contribute 0, so rescale to a mean over valid ones.
                valid = (target != IGNORE_INDEX).float()
                value = loss(logit, target) * valid.numel() / valid.sum().clamp(min=1.0)
            else:
                value = loss(logit, target)
            total = total + weight * value
        return total


def _bce_type() -> type:
    # lazy: smp is heavy (timm); only its losses need it
    from segmentation_models_pytorch.losses import SoftBCEWithLogitsLoss

    return SoftBCEWithLogitsLoss


def build_loss(terms: list[LossTerm]) -> WeightedLoss:
    """Build the weighted loss of a config's terms.

    Raises:
        ConfigError: An unknown loss name (the message lists the valid ones), no terms, or
            parameters the smp loss does not accept.
    """
    if not terms:
        raise ConfigError(
            "loss.terms is empty; give at least one term, e.g. {name: bce, weight: 1}"
        )
    built = []
    for term in terms:
        if term.name not in LOSSES:
            raise ConfigError(
                f"unknown loss {term.name!r}; choose one of: {', '.join(sorted(LOSSES))}"
            )
        try:
            module = LOSSES[term.name](dict(term.params))
        except TypeError as error:
            raise ConfigError(
                f"loss {term.name!r}: invalid params {term.params} ({error})"
            ) from None
        built.append((term.name, float(term.weight), module))
    return WeightedLoss(built)
