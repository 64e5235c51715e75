"""A stand-in for the ``docker`` command in tests: Docker is absent on development machines
and in CI. It is not Docker (no base image, no isolation); it lets the tests run
``run-local --docker`` end to end on our own parts: the commands, the entrypoint, the checks
copied by the Dockerfile, the extraction and scoring on the host.

- ``build``: checks that the arguments name the repository's Dockerfile; builds nothing.
- ``run``: lays out the image's own files by applying the Dockerfile's ``COPY`` lines to a
  temporary root, links each ``--mount`` bind into it, and runs the image's entrypoint there
  with the ``ONCLOUDN_*`` overrides (``ONCLOUDN_PYTHON`` comes from the caller).
- ``kill``: does nothing.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def dockerfile_copies(dockerfile: Path) -> list[tuple[list[str], str]]:
    """The Dockerfile's ``COPY`` instructions as (sources, destination)."""
    copies = []
    for line in dockerfile.read_text().splitlines():
        if line.startswith("COPY "):
            *sources, dest = [part for part in line.split()[1:] if not part.startswith("--")]
            copies.append((sources, dest))
    return copies


def lay_out_image(root: Path, repo: Path = REPO) -> None:
    """Apply the Dockerfile's ``COPY`` lines to ``root`` (the image's files, minus its base)."""
    for sources, dest in dockerfile_copies(repo / "Dockerfile"):
        target = root / dest.lstrip("/")
        for source in sources:
            path = repo / source
            if path.is_dir():
                ignore = shutil.ignore_patterns("__pycache__")
                shutil.copytree(path, target, dirs_exist_ok=True, ignore=ignore)
            elif dest.endswith("/"):
                target.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, target / path.name)
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, target)


def _mounts(argv: list[str]) -> list[dict]:
    mounts = []
    for index, arg in enumerate(argv):
        if arg == "--mount":
            parts = argv[index + 1].split(",")
            fields = dict(part.split("=", 1) for part in parts if "=" in part)
            fields["readonly"] = "readonly" in parts
            mounts.append(fields)
    return mounts


def run(argv: list[str]) -> int:
    """Run the entrypoint on a temporary image root with the binds linked in."""
    with tempfile.TemporaryDirectory() as temp:
        image = Path(temp)
        lay_out_image(image)
        for mount in _mounts(argv):
            target = image / mount["target"].lstrip("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            source = Path(mount["source"])
            if not mount["readonly"]:
                target.symlink_to(source)  # writable: the container's writes reach the host
            elif source.is_dir():
                shutil.copytree(source, target)  # read-only: a copy (find/ls see real files)
            else:
                shutil.copy2(source, target)
        (image / "codeexecution" / "predictions").mkdir()
        env = dict(os.environ)
        env.pop("PYTHONPATH", None)
        env.update(
            ONCLOUDN_CODE_DIR=str(image / "codeexecution"),
            ONCLOUDN_CHECKS_DIR=str(image / "opt" / "oncloudn-checks"),
            ONCLOUDN_PYTHON=os.environ.get("ONCLOUDN_PYTHON", sys.executable),
        )
        entrypoint = image / "codeexecution" / "entrypoint.sh"
        return subprocess.run(["bash", str(entrypoint)], env=env, check=False).returncode


def main(argv: list[str]) -> int:
    """Dispatch ``build``, ``run`` and ``kill`` like the docker CLI."""
    if argv[:1] == ["build"]:
        return 0 if str(REPO / "Dockerfile") in argv else 1
    if argv[:1] == ["run"]:
        return run(argv)
    if argv[:1] == ["kill"]:
        return 0
    print(f"docker stand-in: unsupported command {argv}", file=sys.stderr)
    return 2


def install(bin_dir: Path) -> Path:
    """Write an executable ``docker`` into ``bin_dir`` that runs this stand-in."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    script = bin_dir / "docker"
    script.write_text(
        f"#!{sys.executable}\n"
        "import sys\n"
        f"sys.path.insert(0, {str(Path(__file__).parent)!r})\n"
        "from docker_standin import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    script.chmod(0o755)
    return script
