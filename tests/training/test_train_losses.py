"""Loss registry: names, weighted sums, ignored pixels."""

from __future__ import annotations

import pytest
import torch

from oncloudn.config import LossTerm
from oncloudn.errors import ConfigError
from oncloudn.training.losses import IGNORE_INDEX, LOSSES, build_loss


def test_registry_names() -> None:
    assert set(LOSSES) == {"bce", "dice", "jaccard", "lovasz", "focal"}


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_each_loss_ignores_invalid_pixels(name: str) -> None:
    torch.manual_seed(0)
    loss = build_loss([LossTerm(name=name)])
    logit = torch.randn(2, 8, 8, requires_grad=True)
    target = (torch.rand(2, 8, 8) > 0.5).float()
    target[:, :, :3] = IGNORE_INDEX
    value = loss(logit, target)
    assert torch.isfinite(value)
    value.backward()
    assert torch.all(logit.grad[:, :, :3] == 0)
    changed = logit.detach().clone()
    changed[:, :, :3] = 50.0  # predictions on ignored pixels must not matter
    assert torch.allclose(loss(changed, target), value.detach(), atol=1e-5)


def test_weighted_sum() -> None:
    torch.manual_seed(1)
    logit, target = torch.randn(1, 6, 6), (torch.rand(1, 6, 6) > 0.5).float()
    bce = build_loss([LossTerm("bce", 1.0)])(logit, target)
    dice = build_loss([LossTerm("dice", 1.0)])(logit, target)
    both = build_loss([LossTerm("bce", 0.5), LossTerm("dice", 2.0)])(logit, target)
    assert torch.allclose(both, 0.5 * bce + 2.0 * dice)


def test_unknown_loss_and_params() -> None:
    with pytest.raises(ConfigError, match="choose one of: bce, dice"):
        build_loss([LossTerm("ce")])
    with pytest.raises(ConfigError, match="invalid params"):
        build_loss([LossTerm("dice", params={"nope": 1})])
    with pytest.raises(ConfigError, match="empty"):
        build_loss([])
