"""Submission commands: ``pack``, ``run-local`` and ``runtime-env``."""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

from oncloudn.cli.arg_types import positive_float
from oncloudn.errors import SubmissionError
from oncloudn.submission.isolation import MODES as ISOLATION_MODES

PACK_EPILOG = """\
The zip holds main.py (the repository's submission/main.py) at its root, the runtime-safe
code as oncloudn/runtime/*.py, and model/ (several model folders become an ensemble with
members model/member_00, ...). Packing refuses models the runtime cannot run (unknown
networks, smp pairs not verified under smp 0.2.1, ONNX/OpenVINO backends) and zips with
top-level data/, tests/, predictions/ or submission/ entries. Every model is built and run
once on a small input before the zip is written (atomically).

examples:
  oncloudn pack runs/unet/model submission.zip
  oncloudn pack runs/unet/model submission.zip --tta flips --threshold 0.45 --force
  oncloudn pack runs/a/model runs/b/model ensemble.zip --ensemble-weights 2 1"""

RUN_LOCAL_EPILOG = """\
DATA_ROOT is laid out like the runtime's /codeexecution/data: test_features/<chip_id>/B0X.tif
and test_metadata.csv. OUT must be new or empty (--force replaces an earlier run-local
output); a folder whose earlier run still has a process alive is refused (a lock in OUT).
The zip and DATA_ROOT are checked before OUT is touched. Unzipping is capped (bytes actually
written, entries, compression ratio); links and paths leaving the folder are refused.
main.py runs as `python main.py` in OUT/codeexecution with a time limit, the runtime's smp
0.2.1 when installed (`oncloudn runtime-env install`), and the runtime Python 3.9 + torch 1.8
when built (`oncloudn runtime-env install-python`) or given with --python. Then the
runtime's checks run on OUT/predictions, and OUT/run.json records the zip hash, model,
isolation, timings and checks. With --labels the predictions are scored; --record adds the
score to the leaderboard.

Isolation (--isolation, printed and recorded in run.json):
  namespaces  Linux with unprivileged user namespaces (the default where available):
              main.py runs in new user, network, mount and PID namespaces (util-linux
              `unshare`): no network interface but a down loopback; the whole file system
              read-only except OUT and fresh tmpfs on /tmp, /var/tmp, /dev/shm,
              /run; your
              test_features bind-mounted read-only; every capability dropped, so it cannot
              remount anything; its processes die with run-local.
  copy        no isolation by the operating system (macOS, Windows, kernels without user
              namespaces, or asked for): main.py runs as you, with the network, on a copy
              of the data made read-only by file permissions.
  auto        namespaces where available, else copy (said plainly).
In both, an import guard refuses modules the runtime lacks and Python's socket.connect:
it catches honest mistakes only. The real limit on packages is an interpreter that holds
only the runtime's packages (`runtime-env install-python`, or --python).
Exit status: 0 when the checks pass, 1 when they fail, 2 when main.py fails or times out.

examples:
  oncloudn run-local submission.zip data runs/local
  oncloudn run-local submission.zip data runs/local --labels data/test_labels --record
  oncloudn run-local submission.zip data runs/local --time-limit 600 --force
  oncloudn run-local submission.zip data runs/local --isolation namespaces"""

RUNTIME_ENV_EPILOG = """\
Two environments with the competition runtime's versions, each built from an exact pinned
package list, stamped with that list's key and smoke-tested (import the stack, build the
verified smp networks, one forward pass) before use; an install reuses an up-to-date one and
rebuilds anything else from nothing (--fresh always rebuilds).

install         smp 0.2.1, timm 0.4.12, pretrainedmodels 0.7.4, efficientnet-pytorch 0.6.3,
                munch, six (no dependencies) into <repo>/.runtime-smp in a checkout, else
                ~/.oncloudn/runtime-smp ($ONCLOUDN_RUNTIME_SMP overrides the lookup).
                run-local and the parity tests put it first on PYTHONPATH.
install-python  a Python 3.9 environment with torch 1.8.0, torchvision 0.9.0, numpy 1.20.3,
                scipy 1.7.1, rasterio 1.2.6, scikit-image 0.18.2, albumentations 1.0.3,
                pandas 1.2.5, pillow 8.2.0, tifffile 2021.8.8, smp 0.2.1 ... (CPU) in
                ~/.cache/oncloudn/runtime-py39-<key>; run-local then runs main.py with it
                ($ONCLOUDN_RUNTIME_PYTHON names another interpreter). The Python 3.9 is
                found on PATH or in pyenv (~/.pyenv/versions/3.9*), or given with --base.

examples:
  oncloudn runtime-env install
  oncloudn runtime-env install --fresh --target /opt/runtime-smp
  oncloudn runtime-env install-python
  oncloudn runtime-env install-python --if-available    # no Python 3.9: say so, exit 0
  oncloudn runtime-env install-python --base ~/.pyenv/versions/3.9.18/bin/python
  oncloudn runtime-env show"""


INSTALL_EPILOG = """\
examples:
  oncloudn runtime-env install
  oncloudn runtime-env install --fresh
  oncloudn runtime-env install --target /opt/runtime-smp"""

INSTALL_PYTHON_EPILOG = """\
examples:
  oncloudn runtime-env install-python
  oncloudn runtime-env install-python --if-available    # no Python 3.9: say so, exit 0
  oncloudn runtime-env install-python --base ~/.pyenv/versions/3.9.18/bin/python"""

SHOW_EPILOG = """\
examples:
  oncloudn runtime-env show"""


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``pack``, ``run-local`` and ``runtime-env`` sub-commands."""
    _register_pack(subparsers)
    _register_run_local(subparsers)
    _register_runtime_env(subparsers)


def _register_pack(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "pack",
        help="build submission.zip from model folder(s)",
        description="Build a competition submission zip from one model folder, or an "
        "ensemble of several.",
        epilog=PACK_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "model_dirs",
        type=Path,
        nargs="+",
        metavar="MODEL_DIR",
        help="a model folder (manifest.json + weights, e.g. runs/unet/fold_0); two or more "
        "become an ensemble",
    )
    parser.add_argument("out_zip", type=Path, metavar="OUT_ZIP", help="e.g. submission.zip")
    parser.add_argument("--force", action="store_true", help="overwrite an existing zip")
    parser.add_argument(
        "--ensemble-weights",
        type=float,
        nargs="+",
        metavar="W",
        help="one weight per model folder (default: equal)",
    )
    parser.add_argument(
        "--tta",
        metavar="VIEWS",
        help="override TTA: none, hflip, flips, flips4, d4, or comma-separated view names",
    )
    parser.add_argument(
        "--threshold", type=float, metavar="T", help="override the cloud probability threshold"
    )
    parser.add_argument(
        "--allow-unverified",
        action="store_true",
        help="pack smp architectures/encoders not verified under the runtime's smp 0.2.1",
    )
    parser.set_defaults(func=run_pack)


def run_pack(args: argparse.Namespace) -> int:
    """Pack and print the zip's contents and size."""
    # lazy: keeps `oncloudn --help` fast
    from oncloudn.inference.predictor import parse_tta
    from oncloudn.submission.pack import pack_submission

    result = pack_submission(
        args.model_dirs,
        args.out_zip,
        force=args.force,
        ensemble_weights=args.ensemble_weights,
        tta=parse_tta(args.tta),
        threshold=args.threshold,
        allow_unverified=args.allow_unverified,
    )
    for entry in result.entries:
        print(f"{entry.size:>12,}  {entry.name}")
    model = result.model
    print(
        f"{result.path}: {len(result.entries)} files, {result.total_bytes:,} bytes "
        f"({result.zip_bytes:,} zipped), sha256 {result.sha256}"
    )
    print(
        f"model {model.get('name')!r}: {model.get('kind')} {model.get('architecture')}, "
        f"{model.get('params', 0):,} parameters, TTA {','.join(model.get('tta', []))}, "
        f"threshold {model.get('threshold')}"
    )
    return 0


def _register_run_local(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "run-local",
        help="run submission.zip like the competition runtime, check (and score) it",
        description="Unzip a submission, run its main.py like the competition runtime "
        "(on Linux inside namespaces: no network, read-only data and file system, no "
        "capabilities; elsewhere on a read-only copy of the data; time limit), check the "
        "predictions "
        "against the runtime's rules, and optionally score and record them.",
        epilog=RUN_LOCAL_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("zip", type=Path, help="the submission zip")
    parser.add_argument("data_root", type=Path, help="folder with test_features/")
    parser.add_argument("out", type=Path, help="run folder (new or empty)")
    parser.add_argument("--labels", type=Path, metavar="DIR", help="labels to score against")
    parser.add_argument("--record", action="store_true", help="record the score in the leaderboard")
    parser.add_argument("--db", type=Path, metavar="PATH", help="leaderboard database")
    parser.add_argument("--name", help="leaderboard name of the run (default: the model's)")
    parser.add_argument(
        "--time-limit",
        type=positive_float,
        default=4 * 3600,
        metavar="S",
        help="seconds main.py may run (default: 14400, the runtime's 4 hours)",
    )
    parser.add_argument(
        "--copy-data",
        action="store_true",
        help="give main.py a read-only copy of test_features instead of a read-only mount of "
        "your data (always so without namespaces)",
    )
    parser.add_argument(
        "--isolation",
        choices=ISOLATION_MODES,
        default="auto",
        help="auto (Linux namespaces where available, else copy), namespaces (required), copy "
        "(no isolation by the operating system); default: auto; --docker runs in a container "
        "instead",
    )
    parser.add_argument(
        "--max-unzipped-gib",
        type=float,
        default=8.0,
        metavar="G",
        help="refuse a zip that unzips to more than G GiB (default: 8)",
    )
    parser.add_argument(
        "--python",
        metavar="EXE",
        help="interpreter that runs main.py, e.g. a Python 3.9 + torch 1.8 environment to match "
        "the runtime's versions (default: $ONCLOUDN_RUNTIME_PYTHON, else the environment of "
        "`oncloudn runtime-env install-python` when built, else this one)",
    )
    parser.add_argument(
        "--docker",
        nargs="?",
        const="cpu",
        choices=("cpu", "gpu"),
        help="build the repository's Dockerfile (DrivenData's runtime image, cpu or gpu; "
        "default cpu) and run the zip in it: data read-only, no network",
    )
    parser.add_argument("--force", action="store_true", help="replace an earlier run in OUT")
    parser.set_defaults(func=run_run_local)


def run_run_local(args: argparse.Namespace) -> int:
    """Run the zip; print the checks, timings and score; exit 1 when the checks fail."""
    # lazy: keeps `oncloudn --help` fast
    from oncloudn.scoring.run_scores import score_run
    from oncloudn.submission.isolation import summary_line
    from oncloudn.submission.run_local import run_local
    from oncloudn.submission.unzip import ZipLimits

    if args.record and args.labels is None:
        raise SubmissionError("--record needs --labels: only scored runs go on the leaderboard")
    if not args.max_unzipped_gib > 0:
        raise SubmissionError(f"--max-unzipped-gib must be positive, got {args.max_unzipped_gib}")
    if args.docker:
        # lazy: keeps `oncloudn --help` fast
        from oncloudn.submission.docker_run import run_local_docker

        result = run_local_docker(
            args.zip,
            args.data_root,
            args.out,
            variant=args.docker,
            time_limit_s=args.time_limit,
            force=args.force,
            copy_data=args.copy_data,
            python=args.python,
        )
    else:
        result = run_local(
            args.zip,
            args.data_root,
            args.out,
            time_limit_s=args.time_limit,
            force=args.force,
            copy_data=args.copy_data,
            python=args.python,
            isolation=args.isolation,
            zip_limits=ZipLimits(max_bytes=int(args.max_unzipped_gib * (1 << 30))),
        )
    print(summary_line(result.isolation))
    print(
        f"main.py predicted {result.n_chips} chips in {result.wall_s:.1f} s "
        f"({result.chips_per_s:.2f} chips/s); predictions in {result.predictions_dir}"
    )
    if result.passed:
        print("checks: passed (the runtime's rules hold)")
    else:
        print(f"checks: FAILED ({len(result.problems)} problems)")
        for problem in result.problems[:20]:
            print(f"  - {problem}")
    if args.labels is not None and not result.passed:
        print(f"not scored: the run has problems (see {result.run_json})")
    elif args.labels is not None:
        scored = score_run(
            result.predictions_dir,
            args.labels,
            checked_chip_ids=result.chip_ids,
            record=args.record,
            db_path=args.db,
            name=args.name,
        )
        scores = scored.scores
        print(
            f"Jaccard {score_text(scores['jaccard'])} over {scores['n_chips']} chips "
            f"(precision {score_text(scores['precision'])}, recall {score_text(scores['recall'])})"
        )
        if scored.run_id is not None:
            print(f"recorded as leaderboard run {scored.run_id}")
    print(f"run record: {result.run_json}")
    return 0 if result.passed else 1


def score_text(value: float | None) -> str:
    """A score with 4 decimals, or ``undefined`` (e.g. precision when nothing is cloud).

    Args:
        value: The score; ``None`` or ``nan`` when the metric is undefined.

    Returns:
        The text to print.
    """
    if value is None or math.isnan(value):
        return "undefined"
    return f"{value:.4f}"


def _register_runtime_env(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "runtime-env",
        help="build or show the runtime's smp 0.2.1 and Python 3.9 + torch 1.8 (for run-local)",
        description="Build the competition runtime's package versions for run-local and the "
        "parity tests: smp 0.2.1 beside today's torch, and a Python 3.9 + torch 1.8.0 "
        "environment.",
        epilog=RUNTIME_ENV_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    install = actions.add_parser(
        "install",
        help="pip install smp 0.2.1 and its pinned dependencies into a folder",
        description="pip install --no-deps --target DIR the runtime's smp 0.2.1, timm 0.4.12, "
        "pretrainedmodels 0.7.4, efficientnet-pytorch 0.6.3, munch and six, then smoke-test "
        "them beside this interpreter's torch.",
        epilog=INSTALL_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    install.add_argument(
        "--target", type=Path, help="folder (default: <repo>/.runtime-smp or ~/.oncloudn/...)"
    )
    install.add_argument("--fresh", action="store_true", help="rebuild even when up to date")
    install.set_defaults(func=run_runtime_env_install)
    install_python = actions.add_parser(
        "install-python",
        help="create a Python 3.9 + torch 1.8 environment that run-local then uses",
        description="Create a virtual environment with Python 3.9 and the runtime's versions "
        "(torch 1.8.0, numpy 1.20.3, scipy 1.7.1, rasterio 1.2.6, smp 0.2.1, ...; CPU). "
        "run-local uses it when it exists (or $ONCLOUDN_RUNTIME_PYTHON).",
        epilog=INSTALL_PYTHON_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    install_python.add_argument(
        "--target",
        type=Path,
        help="environment folder (default: ~/.cache/oncloudn/runtime-py39-<key>)",
    )
    install_python.add_argument(
        "--base", help="a Python 3.9 interpreter (default: found on PATH or in pyenv)"
    )
    install_python.add_argument("--fresh", action="store_true", help="rebuild even when up to date")
    install_python.add_argument(
        "--if-available",
        action="store_true",
        help="where no Python 3.9 exists, say so and exit 0 (the runtime-Python tests skip)",
    )
    install_python.set_defaults(func=run_runtime_env_install_python)
    show = actions.add_parser(
        "show",
        help="where the runtime smp and Python are",
        description="Print the runtime Python that run-local uses and the runtime smp's "
        "folder and versions; exit status 1 when the smp is not installed.",
        epilog=SHOW_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    show.set_defaults(func=run_runtime_env_show)


def run_runtime_env_install(args: argparse.Namespace) -> int:
    """Install (or reuse) and print the folder and versions."""
    # lazy: keeps `oncloudn --help` fast
    from oncloudn.submission.runtime_env import install_runtime_smp, installed_versions

    start = time.monotonic()
    target = install_runtime_smp(args.target, fresh=args.fresh)
    versions = installed_versions(target)
    print(
        f"runtime smp ready in {target} ({time.monotonic() - start:.0f} s): "
        + ", ".join(f"{k} {v}" for k, v in versions.items())
    )
    return 0


def run_runtime_env_install_python(args: argparse.Namespace) -> int:
    """Create (or reuse) the environment and print its interpreter."""
    # lazy: keeps `oncloudn --help` fast
    from oncloudn.submission.runtime_env import find_python39, install_runtime_python

    base = args.base or find_python39()
    if base is None and args.if_available:
        print(
            "no Python 3.9 found (python3.9 on PATH or ~/.pyenv/versions/3.9*): the "
            "runtime-Python tests will skip"
        )
        return 0
    start = time.monotonic()
    python = install_runtime_python(args.target, base_python=base, fresh=args.fresh)
    print(f"runtime Python ready: {python} ({time.monotonic() - start:.0f} s)")
    if args.target is not None:
        print(f"run-local uses it with --python {python} or ONCLOUDN_RUNTIME_PYTHON={python}")
    return 0


def run_runtime_env_show(args: argparse.Namespace) -> int:
    """Print the folder and versions; exit 1 when the smp is not installed."""
    # lazy: keeps `oncloudn --help` fast
    from oncloudn.submission.runtime_env import installed_versions, runtime_python, runtime_smp_dir

    python = runtime_python()
    print(f"runtime python: {python or 'not installed (this interpreter runs main.py)'}")
    target = runtime_smp_dir()
    if target is None:
        print("runtime smp: not installed (run `oncloudn runtime-env install`)")
        return 1
    print(f"runtime smp: {target}")
    for name, version in installed_versions(target).items():
        print(f"  {name} {version}")
    return 0
