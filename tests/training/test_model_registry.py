"""create_model: networks, heads, helpful errors, local encoder weights."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from oncloudn.config import ModelConfig
from oncloudn.errors import ConfigError
from oncloudn.models.registry import create_model

BANDS = ["B02", "B03", "B04", "B08"]


def test_unet_and_softmax_head_give_two_class_logits() -> None:
    model = create_model(
        ModelConfig(network="unet", args={"widths": [4, 8]}, head="softmax"), BANDS
    )
    assert model.head["channels"] == 2
    logits = model(torch.randint(0, 9000, (1, 4, 32, 32)).float())
    assert logits.shape == (1, 2, 32, 32)


def test_smp_errors_suggest_names() -> None:
    with pytest.raises(ConfigError, match="did you mean Unet"):
        create_model(ModelConfig(args={"arch": "UNet", "encoder_name": "resnet18"}), BANDS)
    with pytest.raises(ConfigError, match="resnet34"):
        create_model(ModelConfig(args={"arch": "Unet", "encoder_name": "resnet35"}), BANDS)
    with pytest.raises(ConfigError, match="choose one of"):
        create_model(ModelConfig(network="segformer"), BANDS)
    with pytest.raises(ConfigError, match="head"):
        create_model(ModelConfig(head="tanh"), BANDS)


def test_local_encoder_weights_adapt_first_conv(tmp_path: Path) -> None:
    config = ModelConfig(args={"arch": "Unet", "encoder_name": "resnet18", "encoder_depth": 3,
                               "decoder_channels": [16, 8, 4]})  # fmt: skip
    rgb = create_model(config, BANDS[:3])
    path = tmp_path / "encoder.pt"
    torch.save(rgb.network.encoder.state_dict(), path)
    config.encoder_weights = str(path)
    model = create_model(config, BANDS)
    layer = model.network.encoder.layer1[0].conv1.weight
    assert torch.equal(layer, rgb.network.encoder.layer1[0].conv1.weight)
    assert model.network.encoder.conv1.weight.shape[1] == 4
    with pytest.raises(FileNotFoundError):
        create_model(ModelConfig(encoder_weights=str(tmp_path / "missing.pt")), BANDS)
