"""Training commands: ``train`` (config-driven, resumable, torchrun-aware) and ``flag-labels``."""

from __future__ import annotations

import argparse
import math
import os
from pathlib import Path
from typing import Any

from oncloudn.errors import ConfigError

TRAIN_EPILOG = """\
examples:
  oncloudn train configs/tiny_cpu.yaml --set data.root=data/sample
  oncloudn train configs/winners_efficientnet.yaml --all-folds --out runs/effb0
  oncloudn train configs/benchmark_resnet34.yaml --fold 2 --set trainer.epochs=5 \\
      --set optimizer.lr=3e-4
  oncloudn train configs/tiny_cpu.yaml --resume            # continue after a kill
  torchrun --nproc_per_node 4 -m oncloudn.cli.main train configs/winners_efficientnet.yaml

Each fold writes OUT/fold_<k>/ (a model folder: manifest.json, weights.pt of the best epoch,
config.yaml, metrics.json, plus last.pt for resuming) and OUT/oof/fold_<k>.npz (out-of-fold
probabilities of its held-out chips). A run resumes automatically from last.pt when present
(--restart ignores it). Under torchrun (DDP) rank 0 writes logs, checkpoints and folders."""

FLAG_EPILOG = """\
examples:
  oncloudn flag-labels runs/effb0 data/train --out flags.csv            # all OOF files of a run
  oncloudn flag-labels runs/effb0/oof/fold_0.npz data/train --out flags.csv
  oncloudn flag-labels runs/effb0/fold_0 data/train --out flags.csv     # run a model folder
  oncloudn flag-labels runs/effb0 data/train --out flags.csv --top 200 --exclude-out bad.txt
  oncloudn flag-labels runs/effb0 data/train --out flags.csv --plot flags.png --plot-top 9

Prefer out-of-fold predictions: a model scored on chips it trained on agrees with their
noise. The CSV (first column chip_id) ranks chips by disagreement = 1 - per-chip Jaccard;
likely_inverted marks chips whose inverted label fits the prediction clearly better.
--plot draws the first --plot-top chips (RGB view, label outline yellow, model mask outline
magenta, figures in each title) into one PNG. Review them, then list ids to drop in a file
given to data.exclude_lists."""


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``train`` and ``flag-labels``."""
    _register_train(subparsers)
    _register_flag_labels(subparsers)


def _register_train(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train",
        help="train a segmentation model from a YAML config (one model folder per fold)",
        description=(
            "Train smp or plain U-Net models from a YAML config on location-grouped folds, "
            "with validation by the competition metric (pooled Jaccard), checkpoints, "
            "automatic resume, out-of-fold predictions and optional DDP (torchrun)."
        ),
        epilog=TRAIN_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_run_arguments(parser)
    parser.set_defaults(func=run_train)


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """CONFIG, ``--set``, ``--fold``/``--all-folds``, ``--resume``/``--restart``, ``--out``."""
    parser.add_argument("config", type=Path, metavar="CONFIG", help="YAML config (see configs/)")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value, e.g. --set trainer.epochs=2 (repeatable; YAML values)",
    )
    folds = parser.add_mutually_exclusive_group()
    folds.add_argument("--fold", type=int, metavar="K", help="train held-out fold K only")
    folds.add_argument("--all-folds", action="store_true", help="train every fold in turn")
    resume = parser.add_mutually_exclusive_group()
    resume.add_argument(
        "--resume", action="store_true", help="require a last.pt to resume from (default: auto)"
    )
    resume.add_argument(
        "--restart", action="store_true", help="ignore existing checkpoints and start afresh"
    )
    parser.add_argument("--out", type=Path, metavar="DIR", help="run folder (trainer.out_dir)")


def run_overrides(args: argparse.Namespace) -> list[str]:
    """The ``--set`` overrides plus those of ``--out``, ``--fold`` and ``--all-folds``."""
    overrides = list(args.overrides)
    if args.out is not None:
        overrides.append(f"trainer.out_dir={args.out}")
    if args.fold is not None:
        overrides.append(f"data.fold={args.fold}")
    if args.all_folds:
        overrides.append("data.fold=null")
    return overrides


def resume_choice(args: argparse.Namespace) -> bool | None:
    """``True`` for ``--resume``, ``False`` for ``--restart``, else ``None`` (automatic)."""
    return True if args.resume else False if args.restart else None


def print_run_result(result: Any) -> None:
    """One line per fold (rank 0 only), then the pooled OOF Jaccard of several folds."""
    if int(os.environ.get("RANK", "0")) != 0:
        return
    for fold in result.folds:
        print(
            f"fold {fold.fold}: val Jaccard {fold.best_score:.4f} (epoch {fold.best_epoch} of "
            f"{fold.epochs_run}) -> {fold.model_dir}  OOF {fold.oof_path}"
        )
    if len(result.folds) > 1 and not math.isnan(result.oof_jaccard):
        print(f"pooled OOF Jaccard over {len(result.folds)} folds: {result.oof_jaccard:.4f}")


def run_train(args: argparse.Namespace) -> int:
    """Load the config, train, print one line per fold."""
    # lazy: keeps `oncloudn --help` fast
    from oncloudn.config import load_config
    from oncloudn.training.trainer import train

    config = load_config(args.config, run_overrides(args))
    result = train(config, resume=resume_choice(args))
    print_run_result(result)
    return 0


def _register_flag_labels(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "flag-labels",
        help="rank labelled chips by disagreement with (out-of-fold) predictions",
        description=(
            "Find likely label noise: compare out-of-fold predictions (or a model folder's "
            "predictions) with the labels of DATA_ROOT and write a ranked CSV for review."
        ),
        epilog=FLAG_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "source",
        type=Path,
        metavar="OOF_OR_MODEL",
        help="an OOF .npz, a run or oof/ folder (all fold_*.npz), or a model folder",
    )
    parser.add_argument("data_root", type=Path, metavar="DATA_ROOT", help="labelled dataset root")
    parser.add_argument("--out", type=Path, required=True, help="CSV to write (ranked)")
    parser.add_argument("--split", default="train", help="split of DATA_ROOT (default train)")
    parser.add_argument(
        "--threshold", type=float, help="probability threshold (default: the model's, else 0.5)"
    )
    parser.add_argument("--device", default="cpu", help="device for a model folder (default cpu)")
    parser.add_argument("--top", type=int, default=20, help="rows to print (default 20)")
    parser.add_argument(
        "--exclude-out",
        type=Path,
        metavar="FILE",
        help="also write the --top chip ids, one per line (a data.exclude_lists file)",
    )
    parser.add_argument(
        "--plot",
        type=Path,
        metavar="PNG",
        help="also draw the top chips (RGB, label and model mask outlines) into a PNG",
    )
    parser.add_argument(
        "--plot-top", type=int, default=6, metavar="K", help="chips in the --plot (default 6)"
    )
    parser.set_defaults(func=run_flag_labels)


def run_flag_labels(args: argparse.Namespace) -> int:
    """Rank chips, write the CSV, print the top rows."""
    # lazy: keeps `oncloudn --help` fast
    from oncloudn.data.chips import DatasetPaths
    from oncloudn.runtime.atomic import atomic_write_text
    from oncloudn.training.flag_labels import flag_labels, load_predictions, write_flags
    from oncloudn.training.flag_plot import write_flag_plot

    if args.plot_top < 1:
        raise ConfigError(f"--plot-top must be >= 1 (got {args.plot_top})")
    paths = DatasetPaths(args.data_root, args.split)
    probabilities, model_threshold = load_predictions(args.source, paths, args.device)
    threshold = args.threshold if args.threshold is not None else model_threshold or 0.5
    frame = flag_labels(probabilities, paths, threshold)
    write_flags(frame, args.out)
    top = frame.head(max(0, args.top))
    if args.exclude_out is not None:
        text = "# chips flagged by oncloudn flag-labels; review before excluding\n"
        text += "".join(f"{chip_id}\n" for chip_id in top["chip_id"])
        atomic_write_text(args.exclude_out, text)
    if args.plot is not None:
        write_flag_plot(frame, probabilities, paths, args.plot, args.plot_top, threshold)
    print(top.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    inverted = int(frame["likely_inverted"].sum())
    print(f"{len(frame)} chips ranked ({inverted} likely inverted) -> {args.out}")
    if args.plot is not None:
        print(f"top {min(args.plot_top, len(frame))} chips drawn -> {args.plot}")
    return 0
