"""Competition entry point: ``python main.py`` inside the On Cloud N code-execution runtime.

Reads ``<data>/test_features/<chip_id>/B0X.tif``, writes ``<predictions>/<chip_id>.tif`` (one
uint8 512 x 512 mask per chip) with the model folder ``model/`` beside this file. If that
folder cannot be loaded, every chip gets the classic threshold rule (still a valid
submission). Exit status 0 when every chip has a file.

Paths default to the runtime's (``/codeexecution/data``, ``/codeexecution/predictions``) and
can be overridden by arguments or the environment variables ``ONCLOUDN_DATA_DIR``,
``ONCLOUDN_PREDICTIONS_DIR``, ``ONCLOUDN_MODEL_DIR`` and ``ONCLOUDN_TIME_BUDGET_S``.
On a CPU the model runs on the fast path (``oncloudn/runtime/fast.py``: batch norms folded,
oneDNN layout on torch 1.8, checked against the plain model before use; ``--fast off`` or
``ONCLOUDN_FAST=off`` turns it off) with torch's threads sized to the CPUs the process may use
(``--threads`` / ``ONCLOUDN_THREADS``); one thread reads the next batch and one writes masks
behind the forward pass.
``--summary PATH`` (or ``ONCLOUDN_SUMMARY_PATH``) also writes the final summary as JSON,
atomically, to a path outside the predictions folder (``oncloudn run-local`` reads it);
the runtime sets neither, so nothing is written there.
"""

import argparse
import csv
import logging
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import torch  # noqa: E402

from oncloudn.runtime.atomic import atomic_write_json  # noqa: E402
from oncloudn.runtime.chipio import CHIP_SIZE, list_chip_ids  # noqa: E402
from oncloudn.runtime.fast import FAST_LAYOUTS, accelerate_model, default_batch_size  # noqa: E402
from oncloudn.runtime.loader import load_model  # noqa: E402
from oncloudn.runtime.models import threshold_model  # noqa: E402
from oncloudn.runtime.predict import __file__ as predict_file  # noqa: E402
from oncloudn.runtime.predict import predict_chips  # noqa: E402
from oncloudn.runtime.threads import configure_threads  # noqa: E402

LOGGER = logging.getLogger("main")
DEFAULT_TIME_BUDGET_S = 3 * 3600.0  # the runtime allows about 4 hours in all
READ_AHEAD_WORKERS = 1  # reading a chip takes ~5 ms; more threads only compete with torch's


def parse_args(argv=None) -> argparse.Namespace:
    """Arguments, with defaults from the environment, then the runtime's paths."""
    env = os.environ.get
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=env("ONCLOUDN_DATA_DIR", "/codeexecution/data"))
    parser.add_argument(
        "--predictions-dir",
        default=env("ONCLOUDN_PREDICTIONS_DIR", "/codeexecution/predictions"),
    )
    parser.add_argument("--model-dir", default=env("ONCLOUDN_MODEL_DIR", "") or None)
    parser.add_argument(
        "--time-budget",
        type=float,
        default=float(env("ONCLOUDN_TIME_BUDGET_S", DEFAULT_TIME_BUDGET_S)),
        help="seconds; TTA steps down to stay within it (0: no budget)",
    )
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--device", default=None, help="default: cuda when available")
    parser.add_argument(
        "--fast",
        default=env("ONCLOUDN_FAST", "auto"),
        choices=FAST_LAYOUTS,
        help="fast-path layout of the network (default auto; off: the plain model)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=int(env("ONCLOUDN_THREADS", "0") or 0),
        help="torch CPU threads (default 0: the CPUs this process may use)",
    )
    parser.add_argument(
        "--summary",
        default=env("ONCLOUDN_SUMMARY_PATH", "") or None,
        help="also write the summary as JSON to this path (outside the predictions folder)",
    )
    args = parser.parse_args(argv)
    if args.summary and _is_inside(args.summary, args.predictions_dir):
        parser.error(
            f"--summary {args.summary} lies inside the predictions folder "
            f"{args.predictions_dir}, which may hold only <chip_id>.tif files; choose a path "
            "outside it"
        )
    return args


def _is_inside(path: str, folder: str) -> bool:
    """Whether ``path`` is ``folder`` or lies under it (links resolved)."""
    path, folder = os.path.realpath(path), os.path.realpath(folder)
    return os.path.commonpath([path, folder]) == folder


def log_metadata(data_dir: str, chip_ids: list) -> None:
    """Log how the metadata CSV (if any) compares with the chip folders (logging only)."""
    path = os.path.join(data_dir, "test_metadata.csv")
    if not os.path.exists(path):
        return
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            listed = {row.get("chip_id", "") for row in csv.DictReader(handle)}
    except Exception as error:  # noqa: BLE001 - metadata is informative only
        LOGGER.warning("cannot read %s: %s", path, error)
        return
    LOGGER.info(
        "%s lists %d chips; %d chip folders, %d of them not in the CSV",
        path,
        len(listed),
        len(chip_ids),
        len(set(chip_ids) - listed),
    )


def main(argv=None) -> int:
    """Predict every chip; return 0 when each has its file."""
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    args = parse_args(argv)
    LOGGER.info(
        "oncloudn.runtime from %s, torch %s", os.path.dirname(predict_file), torch.__version__
    )
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda"):
        torch.backends.cudnn.benchmark = True
    else:
        configure_threads(args.threads or None)
    features_dir = os.path.join(args.data_dir, "test_features")
    chip_ids = list_chip_ids(features_dir)
    log_metadata(args.data_dir, chip_ids)
    model_dir = args.model_dir or os.path.join(HERE, "model")
    model_error = None
    try:
        model = load_model(model_dir, device)
    except Exception as error:  # noqa: BLE001 - a broken model must still give a valid submission
        LOGGER.exception("cannot load model folder %s; using the threshold rule", model_dir)
        model_error = f"{type(error).__name__}: {error}"
        model = threshold_model().to(device)
    model, layout = accelerate_model(model, device, args.fast)
    batch_size = args.batch_size or default_batch_size(device)
    summary = predict_chips(
        model,
        features_dir,
        args.predictions_dir,
        chip_ids=chip_ids,
        batch_size=batch_size,
        device=device,
        time_budget_s=args.time_budget or None,
        num_workers=READ_AHEAD_WORKERS,
        chip_size=CHIP_SIZE,  # the runtime's rule: every mask is 512 x 512
    )
    summary["fast_layout"] = layout
    missing = [
        c for c in chip_ids if not os.path.exists(os.path.join(args.predictions_dir, c + ".tif"))
    ]
    LOGGER.info("summary: %s", {k: v for k, v in summary.items() if k != "failed"})
    if args.summary:
        summary.update(model_dir=model_dir, model_error=model_error, n_missing=len(missing))
        atomic_write_json(args.summary, summary)
        LOGGER.info("summary written to %s", args.summary)
    if missing:
        LOGGER.error("%d chips have no prediction file, e.g. %s", len(missing), missing[:5])
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
