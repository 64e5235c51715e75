"""The post-processing sweep: cache probabilities once, tune on some chips, report on others.

See :func:`sweep_postprocessing` (``oncloudn sweep-postprocessing``).
"""

from .outputs import changed_chips, write_results, write_tuned_model
from .run import SweepResult, sweep_postprocessing
from .settings import DEFAULT_SPACE, PARAMETERS, QUICK_SPACE, Setting, parse_overrides

__all__ = [
    "DEFAULT_SPACE",
    "PARAMETERS",
    "QUICK_SPACE",
    "Setting",
    "SweepResult",
    "changed_chips",
    "parse_overrides",
    "sweep_postprocessing",
    "write_results",
    "write_tuned_model",
]
