"""The end-to-end demo (``oncloudn demo``): teacher -> student recipe on sample data.

``pipeline`` drives it, ``data`` generates the labelled and unlabelled roots and the
student's folds, ``recipe`` trains the teacher and distils the student from
``configs/demo_teacher.yaml`` and ``configs/demo_student.yaml``, ``report`` holds the
result and its table.
"""

from oncloudn.demo.pipeline import repo_file, run_demo
from oncloudn.demo.report import DemoResult, DemoRow, format_stages, format_table

__all__ = ["DemoResult", "DemoRow", "format_stages", "format_table", "repo_file", "run_demo"]
