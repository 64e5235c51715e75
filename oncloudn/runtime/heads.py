"""Network heads (runtime-safe): their manifest specs and their mapping to 2-class logits.

A head spec is the manifest's ``head`` dict: ``{"activation": "sigmoid" | "softmax",
"channels": K, "positive_index": i}``. Every model's output at the interface is 2-class
logits ``[N, 2, H, W]`` (clear, cloud): a 1-channel sigmoid z maps to ``[0, z]``, a 2-channel
softmax to ``[other, positive]``, a K-class softmax to ``[logsumexp(non-cloud), cloud]``.
"""

from typing import Any

import torch

HEAD_ACTIVATIONS = ("sigmoid", "softmax")

# The heads a config names (``model.head``), as manifest specs.
HEAD_SPECS: dict[str, dict[str, Any]] = {
    "sigmoid": {"activation": "sigmoid", "channels": 1, "positive_index": 0},
    "softmax": {"activation": "softmax", "channels": 2, "positive_index": 1},
}

_LOG_EPS = 1e-6


def head_spec(name: str = "sigmoid") -> dict[str, Any]:
    """A fresh copy of the manifest head spec called ``name``.

    Raises:
        ValueError: An unknown name (the message lists the valid ones).
    """
    if name not in HEAD_SPECS:
        raise ValueError("unknown head {!r}; choose one of: {}".format(name, ", ".join(HEAD_SPECS)))
    return dict(HEAD_SPECS[name])


def head_channels(head: dict[str, Any]) -> int:
    """Output channels a head expects (``head["channels"]``, default 1)."""
    return int(head.get("channels", 1))


def check_head_activation(head: dict[str, Any]) -> str:
    """The head's activation (default ``sigmoid``).

    Raises:
        ValueError: An activation other than those of ``HEAD_ACTIVATIONS``.
    """
    activation = head.get("activation", "sigmoid")
    if activation not in HEAD_ACTIVATIONS:
        raise ValueError(
            "unknown head activation {!r}; choose one of: {}".format(
                activation, ", ".join(HEAD_ACTIVATIONS)
            )
        )
    return activation


def head_to_logits(output: torch.Tensor, head: dict[str, Any]) -> torch.Tensor:
    """Map a network's raw output ``[N, K, H, W]`` to 2-class logits ``[N, 2, H, W]``.

    - ``sigmoid``: channel ``positive_index`` (default 0) is the cloud logit z -> ``[0, z]``.
    - ``softmax`` with 2 channels: ``[other, positive]`` (``positive_index`` default 1).
    - ``softmax`` with K > 2 channels: ``[logsumexp(non-cloud channels), cloud]``.

    Raises:
        ValueError: Unknown activation, a positive index out of range, or a 1-channel softmax.
    """
    activation = check_head_activation(head)
    channels = int(output.shape[1])
    default_index = 0 if activation == "sigmoid" or channels == 1 else 1
    positive = int(head.get("positive_index", default_index))
    if not 0 <= positive < channels:
        raise ValueError(
            f"head positive_index {positive} is out of range for a {channels}-channel output"
        )
    cloud = output[:, positive : positive + 1]
    if activation == "sigmoid":
        return torch.cat([torch.zeros_like(cloud), cloud], dim=1)
    if channels < 2:
        raise ValueError("a softmax head needs 2 or more channels; use 'sigmoid' for one")
    others = [output[:, i : i + 1] for i in range(channels) if i != positive]
    if len(others) == 1:
        clear = others[0]
    else:
        clear = torch.logsumexp(torch.cat(others, dim=1), dim=1, keepdim=True)
    return torch.cat([clear, cloud], dim=1)


def probability_to_logits(probability: torch.Tensor) -> torch.Tensor:
    """2-class logits ``[N, 2, H, W]`` whose softmax gives back ``probability`` ``[N, H, W]``."""
    p = probability.float().clamp(_LOG_EPS, 1.0 - _LOG_EPS).unsqueeze(1)
    return torch.cat([torch.log1p(-p), torch.log(p)], dim=1)
