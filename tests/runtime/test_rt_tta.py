"""TTA views: exact inverses, distinct transforms, merging, presets, step-down."""

import pytest
import torch
import torch.nn.functional as F

from oncloudn.runtime.tta import (
    D4_VIEWS,
    TTA_PRESETS,
    apply_view,
    invert_view,
    predict_with_tta,
    resolve_views,
    step_down_views,
)


@pytest.fixture
def image() -> torch.Tensor:
    torch.manual_seed(0)
    return torch.rand(2, 3, 6, 6)


@pytest.mark.parametrize("view", D4_VIEWS)
def test_every_view_inverts_exactly(image: torch.Tensor, view: str) -> None:
    assert torch.equal(invert_view(apply_view(image, view), view), image)


def test_views_are_the_eight_distinct_symmetries(image: torch.Tensor) -> None:
    outputs = {tuple(apply_view(image, v).flatten().tolist()) for v in D4_VIEWS}
    assert len(outputs) == 8


def test_views_match_their_definitions() -> None:
    grid = torch.tensor([[1, 2], [3, 4]])
    expected = {
        "hflip": [[2, 1], [4, 3]],
        "vflip": [[3, 4], [1, 2]],
        "rot90": [[2, 4], [1, 3]],
        "rot180": [[4, 3], [2, 1]],
        "transpose": [[1, 3], [2, 4]],
        "antitranspose": [[4, 2], [3, 1]],
    }
    for view, values in expected.items():
        assert apply_view(grid, view).tolist() == values, view


def test_non_square_views_invert(image: torch.Tensor) -> None:
    x = torch.rand(1, 2, 4, 6)
    for view in D4_VIEWS:
        assert torch.equal(invert_view(apply_view(x, view), view), x)


def _equivariant_fn(x: torch.Tensor) -> torch.Tensor:
    # A symmetric 3x3 blur of the channel mean: equivariant to all 8 views.
    kernel = torch.tensor([[1.0, 2.0, 1.0], [2.0, 4.0, 2.0], [1.0, 2.0, 1.0]]) / 16
    z = F.conv2d(x.mean(1, keepdim=True), kernel.view(1, 1, 3, 3), padding=1)
    return torch.cat([torch.zeros_like(z), z * 3 - 1], dim=1)


@pytest.mark.parametrize("merge", ["probability", "logit"])
def test_equivariant_function_gives_identical_output(image: torch.Tensor, merge: str) -> None:
    plain = predict_with_tta(_equivariant_fn, image, ["identity"], merge)
    d4 = predict_with_tta(_equivariant_fn, image, "d4", merge)
    assert torch.allclose(plain, d4, atol=1e-6)
    assert plain.shape == (2, 6, 6)


def test_tta_averages_a_non_equivariant_function() -> None:
    x = torch.zeros(1, 1, 2, 2)

    def left_column_is_cloud(batch: torch.Tensor) -> torch.Tensor:
        z = torch.full_like(batch[:, :1], -20.0)
        z[..., 0] = 20.0
        return torch.cat([torch.zeros_like(z), z], dim=1)

    flips = predict_with_tta(left_column_is_cloud, x, ["identity", "hflip"], "probability")
    assert torch.allclose(flips, torch.full((1, 2, 2), 0.5), atol=1e-6)


def test_resolve_presets_and_unknown_names() -> None:
    assert resolve_views("d4") == list(D4_VIEWS)
    assert resolve_views(["flips", "rot90"]) == ["identity", "hflip", "vflip", "rot90"]
    assert resolve_views(None) == ["identity"] == TTA_PRESETS["none"]
    with pytest.raises(ValueError, match="antitranspose"):
        resolve_views(["diagonal"])
    with pytest.raises(ValueError, match="choose from"):
        apply_view(torch.zeros(2, 2), "mirror")
    with pytest.raises(ValueError, match="probability, logit"):
        predict_with_tta(_equivariant_fn, torch.zeros(1, 1, 2, 2), None, "median")


def test_step_down_halves_and_keeps_identity_first() -> None:
    sizes = []
    views = list(D4_VIEWS)
    while True:
        sizes.append(len(views))
        if len(views) == 1:
            break
        views = step_down_views(views)
    assert sizes == [8, 4, 2, 1]
    assert views == ["identity"]
    assert step_down_views(list(D4_VIEWS)) == ["identity", "hflip", "vflip", "rot180"]
