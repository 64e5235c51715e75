"""Head specs and the mapping of network outputs to 2-class logits."""

import pytest
import torch

from oncloudn.runtime.heads import HEAD_SPECS, head_spec, head_to_logits, probability_to_logits
from oncloudn.runtime.manifest import Manifest


def test_sigmoid_head_maps_to_zero_and_z() -> None:
    z = torch.randn(2, 1, 3, 3)
    logits = head_to_logits(z, {"activation": "sigmoid", "channels": 1})
    assert torch.equal(logits[:, 0], torch.zeros(2, 3, 3))
    assert torch.allclose(torch.softmax(logits, 1)[:, 1], torch.sigmoid(z[:, 0]))


@pytest.mark.parametrize("positive", [0, 1])
def test_two_channel_softmax_head_reorders(positive: int) -> None:
    out = torch.randn(2, 2, 3, 3)
    logits = head_to_logits(out, {"activation": "softmax", "positive_index": positive})
    assert torch.equal(logits[:, 1], out[:, positive])
    assert torch.equal(logits[:, 0], out[:, 1 - positive])


def test_three_class_head_keeps_the_cloud_probability() -> None:
    out = torch.randn(2, 3, 4, 4)  # clear, cloud, shadow
    logits = head_to_logits(out, {"activation": "softmax", "channels": 3, "positive_index": 1})
    expected = torch.softmax(out, 1)[:, 1]
    assert torch.allclose(torch.softmax(logits, 1)[:, 1], expected, atol=1e-6)
    assert torch.allclose(logits[:, 0], torch.logsumexp(out[:, [0, 2]], 1))


def test_head_errors() -> None:
    with pytest.raises(ValueError, match="out of range"):
        head_to_logits(torch.zeros(1, 2, 2, 2), {"activation": "softmax", "positive_index": 2})
    with pytest.raises(ValueError, match="sigmoid, softmax"):
        head_to_logits(torch.zeros(1, 1, 2, 2), {"activation": "tanh"})
    with pytest.raises(ValueError, match="2 or more"):
        head_to_logits(torch.zeros(1, 1, 2, 2), {"activation": "softmax"})


def test_head_specs_are_fresh_copies_and_the_manifest_default() -> None:
    spec = head_spec("softmax")
    spec["channels"] = 3
    assert HEAD_SPECS["softmax"]["channels"] == 2
    assert Manifest().head == head_spec("sigmoid") == head_spec()
    with pytest.raises(ValueError, match="unknown head 'tanh'; choose one of: sigmoid, softmax"):
        head_spec("tanh")


def test_probability_to_logits_round_trips() -> None:
    p = torch.tensor([[[0.0, 0.25], [0.5, 1.0]]])
    back = torch.softmax(probability_to_logits(p), 1)[:, 1]
    assert torch.allclose(back, p, atol=1e-5)
