"""Config loading, overrides, unknown keys and saving."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest

from oncloudn.config import TrainConfig, config_to_dict, load_config, save_config
from oncloudn.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_load_fills_defaults_and_types(tmp_path: Path) -> None:
    path = write(
        tmp_path / "c.yaml", "trainer: {epochs: 3, batch_size: 2}\noptimizer: {lr: 1e-3}\n"
    )
    config = load_config(path)
    assert isinstance(config, TrainConfig)
    assert config.trainer.epochs == 3 and config.trainer.batch_size == 2
    assert config.optimizer.lr == pytest.approx(1e-3)  # YAML reads 1e-3 as a string
    assert config.data.bands == ["B02", "B03", "B04", "B08"]


def test_overrides_parse_yaml_values_and_list_items(tmp_path: Path) -> None:
    path = write(tmp_path / "c.yaml", "loss: {terms: [{name: bce}, {name: dice, weight: 2}]}\n")
    config = load_config(
        path,
        ["trainer.epochs=7", "data.fold=null", "model.args={arch: FPN, encoder_name: resnet18}",
         "loss.terms.1.weight=0.25", "trainer.amp=false"],
    )  # fmt: skip
    assert config.trainer.epochs == 7
    assert config.data.fold is None
    assert config.model.args == {"arch": "FPN", "encoder_name": "resnet18"}
    assert config.loss.terms[1].weight == 0.25 and config.loss.terms[1].name == "dice"
    assert config.trainer.amp is False


def test_unknown_key_lists_valid_keys_and_file(tmp_path: Path) -> None:
    path = write(tmp_path / "bad.yaml", "trainer: {epochz: 3}\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert "bad.yaml" in message and "epochz" in message and "epochs" in message


def test_unknown_override_and_bad_type(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="valid keys of OptimizerConfig"):
        load_config(None, ["optimizer.learning_rate=0.1"])
    with pytest.raises(ConfigError, match="trainer.epochs: expected an integer"):
        load_config(None, ["trainer.epochs=many"])
    with pytest.raises(ConfigError, match="key.sub=value"):
        load_config(None, ["trainer.epochs"])


def test_save_roundtrip(tmp_path: Path) -> None:
    config = load_config(None, ["trainer.epochs=4", "augmentation.steps=[{name: D4}]"])
    path = save_config(config, tmp_path / "out" / "config.yaml")
    assert config_to_dict(load_config(path)) == config_to_dict(config)
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]


@pytest.mark.parametrize("name", ["benchmark_resnet34", "winners_efficientnet", "tiny_cpu"])
def test_shipped_configs_load(name: str) -> None:
    from oncloudn.models.registry import validate_model_config
    from oncloudn.training.augment import build_augmentation
    from oncloudn.training.losses import build_loss

    config = load_config(REPO / "configs" / f"{name}.yaml")
    validate_model_config(config.model)
    build_loss(config.loss.terms)
    build_augmentation(config.augmentation)


@dataclass
class DistillSection:
    """A stand-in for a later config section."""

    temperature: float = 1.0
    teacher: str | None = None


@dataclass
class ExtendedConfig(TrainConfig):
    """A config extending the train config with a new section."""

    distill: DistillSection = field(default_factory=DistillSection)


def test_config_tree_can_be_extended(tmp_path: Path) -> None:
    path = write(tmp_path / "d.yaml", "distill: {temperature: 2}\ntrainer: {epochs: 1}\n")
    config = load_config(path, ["distill.teacher=runs/t"], cls=ExtendedConfig)
    assert config.distill.temperature == 2.0 and config.distill.teacher == "runs/t"
    assert config.trainer.epochs == 1
