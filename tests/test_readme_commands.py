"""The README's fresh-machine test command is exactly what .ci/run runs."""

import re
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def test_ci_runs_the_readme_test_command() -> None:
    ci = (REPO_ROOT / ".ci" / "run").read_text()
    command = re.search(r"^TEST_COMMAND='(.+)'$", ci, re.MULTILINE)
    assert command is not None, ".ci/run must define TEST_COMMAND='...'"
    assert 'eval "$TEST_COMMAND"' in ci
    readme = (REPO_ROOT / "README.md").read_text()
    fresh = readme[readme.index("## Fresh machine") : readme.index("## Pipeline and layout")]
    assert f"```bash\n{command.group(1)}\n```" in fresh
