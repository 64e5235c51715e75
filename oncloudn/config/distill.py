"""The distillation config: the train config's tree plus ``teacher`` and ``distillation``.

A distill config file mirrors :class:`~oncloudn.config.schema.TrainConfig` (every section
and key of a train config means the same) and adds::

    data:         {...train keys, licence, extra_roots: [{path, split, licence}, ...],
                   holdout_locations: [...]}
    teacher:      {path, tta, device, licence}
    distillation: {mode, temperature, alpha, disagreement_weight, use_labels, cache_dir,
                   cache_batch_size}

The student defaults to the runtime's plain U-Net, widths 8..128 with a space-to-depth stem
(``STUDENT_ARGS``: 492,809 parameters, 1.9 GFLOPs per chip, the fast student of the speed
issue). The loader (``loader.py``) reads it with ``load_config(path, overrides,
DistillConfig)``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from oncloudn.config.schema import DataConfig, ModelConfig, TrainConfig
from oncloudn.errors import ConfigError

DISTILL_MODES = ("online", "cached")
# The default student: 2 x 2 pixel blocks folded into channels first, so the U-Net runs at
# half resolution (a quarter of the compute of the full-resolution U-Net, same parameters).
STUDENT_ARGS = {"widths": [8, 16, 32, 64, 128], "space_to_depth": 2}


@dataclass
class DataRoot:
    """One more dataset root, labelled or not.

    Attributes:
        path: The dataset root (``ROOT/{split}_features/...``; ``{split}_labels`` optional).
        split: Its split.
        licence: Its licence and source, recorded in the student's provenance.
    """

    path: str = ""
    split: str = "train"
    licence: str = ""


@dataclass
class DistillDataConfig(DataConfig):
    """The train config's data section, with several roots and held-out locations.

    ``root`` / ``split`` is the first root; ``extra_roots`` follow. A chip is labelled when
    its root holds its label file. A chip id present in several roots is read from the first
    root holding a label for it (else from the first root listing it).

    Attributes:
        licence: Licence and source of ``root``, recorded in the student's provenance.
        extra_roots: More dataset roots, labelled or not.
        holdout_locations: Locations whose chips are removed from every root (matched by
            chip id, so a chip listed under another location or none in a second root goes
            too); neither trained on nor validated, listed in ``<out_dir>/holdout.csv``.
    """

    licence: str = ""
    extra_roots: list[DataRoot] = field(default_factory=list)
    holdout_locations: list[str] = field(default_factory=list)


@dataclass
class TeacherConfig:
    """The teacher: any model folder ``oncloudn.models.folder.load_model_folder`` loads.

    Attributes:
        path: The teacher's model folder.
        tta: TTA views of the teacher's targets; ``None``: the teacher manifest's.
        device: ``auto`` (the training device), ``cpu``, ``cuda`` or ``cuda:N``.
        licence: Its licence, recorded in the provenance when its manifest names none.
    """

    path: str = ""
    tta: list[str] | None = None
    device: str = "auto"
    licence: str = ""


@dataclass
class DistillationConfig:
    """How the student learns from the teacher.

    Attributes:
        mode: ``online`` (the teacher runs on each augmented batch) or ``cached`` (its
            targets are computed once per chip, stored as fp16 and augmented with the image).
        temperature: Softening temperature ``T`` of the 2-class logits (KD scaled by T^2).
        alpha: Weight of the distillation term where labels exist (the label loss of
            ``loss.terms`` gets ``1 - alpha``); unlabelled pixels get distillation only.
        disagreement_weight: Weight in ``[0, 1]`` of labelled pixels where the teacher's
            hard label differs from the label (1: no down-weighting; see the README).
        use_labels: Use the labels at all (``false``: pure distillation, validation
            against the teacher).
        cache_dir: Where cached targets live (shared by runs; keyed by teacher and TTA);
            ``None``: ``<out_dir>/teacher_cache``. Online runs use it for teacher-referenced
            validation only.
        cache_batch_size: Chips per teacher batch when filling the cache.
    """

    mode: str = "online"
    temperature: float = 2.0
    alpha: float = 0.5
    disagreement_weight: float = 1.0
    use_labels: bool = True
    cache_dir: str | None = None
    cache_batch_size: int = 8


def student_model() -> ModelConfig:
    """The default student: the runtime's plain U-Net, widths 8..128, space-to-depth 2.

    492,809 parameters; see :data:`STUDENT_ARGS`.
    """
    args = {**STUDENT_ARGS, "widths": list(STUDENT_ARGS["widths"])}  # a fresh list per config
    return ModelConfig(network="unet", args=args, head="sigmoid")


@dataclass
class DistillConfig(TrainConfig):
    """The whole distillation config (a :class:`TrainConfig` the trainer runs as it is)."""

    data: DistillDataConfig = field(default_factory=DistillDataConfig)
    model: ModelConfig = field(default_factory=student_model)
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    distillation: DistillationConfig = field(default_factory=DistillationConfig)


def check_distill_config(config: DistillConfig) -> None:
    """Check the distillation-specific values.

    Raises:
        ConfigError: A missing teacher, an unknown mode or an out-of-range weight.
    """
    settings = config.distillation
    if not config.teacher.path:
        raise ConfigError(
            "teacher.path is empty; set it to a model folder, e.g. --set teacher.path=runs/x/fold_0"
        )
    if settings.mode not in DISTILL_MODES:
        raise ConfigError(
            f"distillation.mode {settings.mode!r} is unknown; choose one of: "
            f"{', '.join(DISTILL_MODES)}"
        )
    if settings.temperature <= 0:
        raise ConfigError(f"distillation.temperature must be > 0 (got {settings.temperature})")
    for name in ("alpha", "disagreement_weight"):
        value = getattr(settings, name)
        if not 0.0 <= value <= 1.0:
            raise ConfigError(f"distillation.{name} must be in [0, 1] (got {value})")
    if settings.cache_batch_size < 1:
        raise ConfigError(
            f"distillation.cache_batch_size must be >= 1 (got {settings.cache_batch_size})"
        )
    for index, root in enumerate(config.data.extra_roots):
        if not root.path:
            raise ConfigError(f"data.extra_roots[{index}].path is empty; give a dataset root")
