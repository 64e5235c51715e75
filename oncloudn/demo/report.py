"""What the demo produced: one row per submission, stage timings, the printed table."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from torch import nn

from oncloudn.models.folder import load_model_folder


@dataclass
class DemoRow:
    """One packed submission of the demo.

    Attributes:
        name: ``threshold``, ``teacher`` or ``student``.
        test_jaccard: Pooled Jaccard of its run-local predictions on the sample test split.
        val_jaccard: Best validation Jaccard of its training run (``None`` for the rule).
        params: Trainable parameters of its network (0 for the rule).
    """

    name: str
    test_jaccard: float
    val_jaccard: float | None
    params: int


@dataclass
class DemoResult:
    """What the demo produced.

    Attributes:
        out_dir: The demo's folder.
        rows: One row per packed submission (rule first).
        stages: Wall seconds per stage, in order.
        seconds: Wall time of the whole demo.
    """

    out_dir: Path
    rows: list[DemoRow] = field(default_factory=list)
    stages: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def scores(self) -> dict[str, float]:
        """Test Jaccard per submission name."""
        return {row.name: row.test_jaccard for row in self.rows}


def network_parameters(model_dir: Path) -> int:
    """Trainable parameters of a model folder's network (0 for a rule)."""
    model = load_model_folder(model_dir, "cpu")
    if not isinstance(model, nn.Module):
        return 0
    return sum(parameter.numel() for parameter in model.parameters() if parameter.requires_grad)


def format_table(result: DemoResult) -> str:
    """The demo's final table: test and validation Jaccard and parameters per submission."""
    lines = [f"{'model':<10} {'test Jaccard':>12} {'val Jaccard':>11} {'params':>10}"]
    for row in result.rows:
        val = "-" if row.val_jaccard is None else f"{row.val_jaccard:.4f}"
        lines.append(f"{row.name:<10} {row.test_jaccard:>12.4f} {val:>11} {row.params:>10,}")
    return "\n".join(lines)


def format_stages(result: DemoResult) -> str:
    """Where the demo's time went, one ``stage: seconds`` per line."""
    return "\n".join(f"  {stage:<28} {seconds:6.1f} s" for stage, seconds in result.stages.items())
