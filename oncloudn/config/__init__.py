"""Training configs: the typed schema (``schema.py``) and its YAML loader (``loader.py``).

``from oncloudn.config import TrainConfig, load_config`` keeps working: this package
re-exports both modules' public names, and the distillation config (``distill.py``).
"""

from oncloudn.config.distill import (
    DataRoot,
    DistillationConfig,
    DistillConfig,
    DistillDataConfig,
    TeacherConfig,
    check_distill_config,
)
from oncloudn.config.loader import (
    apply_override,
    config_from_dict,
    config_to_dict,
    load_config,
    save_config,
)
from oncloudn.config.ranges import check_ranges
from oncloudn.config.schema import (
    AugmentConfig,
    AugmentStep,
    DataConfig,
    LossConfig,
    LossTerm,
    ModelConfig,
    NormalizationConfig,
    OptimizerConfig,
    ScheduleConfig,
    TrainConfig,
    TrainerConfig,
)

__all__ = [
    "AugmentConfig",
    "AugmentStep",
    "DataConfig",
    "DataRoot",
    "DistillConfig",
    "DistillDataConfig",
    "DistillationConfig",
    "LossConfig",
    "LossTerm",
    "ModelConfig",
    "NormalizationConfig",
    "OptimizerConfig",
    "ScheduleConfig",
    "TeacherConfig",
    "TrainConfig",
    "TrainerConfig",
    "apply_override",
    "check_distill_config",
    "check_ranges",
    "config_from_dict",
    "config_to_dict",
    "load_config",
    "save_config",
]
