"""``oncloudn sweep-postprocessing``: compare thresholds, TTA and morphology by Jaccard."""

from __future__ import annotations

import argparse
from pathlib import Path

SWEEP_EPILOG = """\
SOURCE is a model folder (its probabilities are computed once per TTA view and cached), an
out-of-fold .npz or run folder from `oncloudn train` (oof/fold_*.npz), or a folder of
<chip_id>.tif from `oncloudn predict --probabilities`. The data root must hold labels.

Settings are chosen on tuning chips by coordinate ascent over TTA, threshold, smoothing,
opening, closing, dilation, erosion, min_area, max_hole_area and the chip-level rules, and
reported on other chips with 95 % bootstrap intervals (and a paired interval of the gain).
--tune rules: location:A (tune on A, report on the rest), locations (each location reported
with a setting tuned on the others), folds:K, all (in-sample, optimistic).

OUT_DIR receives sweep.json, sweep.md, per_location.csv, curves.csv and
jaccard_vs_parameter[-SOURCE].png. --write-manifest DIR copies the (single) model folder with
the setting tuned on all tuning chips in its manifest, ready for `oncloudn pack`.

examples:
  oncloudn sweep-postprocessing runs/unet/fold_0/model --data data/sample --out sweeps/unet
  oncloudn sweep-postprocessing teachers/ukis --data ../shared/data/oncloudn-real-labeled \\
      --tune location:Chifunfu --out sweeps/ukis --write-manifest models/ukis-tuned
  oncloudn sweep-postprocessing runs/unet --data data/train --tune folds:5 --quick \\
      --set threshold=0.4,0.5,0.6 --set "tta=none;flips\""""


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``sweep-postprocessing`` sub-command."""
    parser = subparsers.add_parser(
        "sweep-postprocessing",
        help="tune threshold, TTA and morphology on some chips, report on others",
        description="Compare post-processing settings by the competition's pooled Jaccard, "
        "tuned on one set of chips and reported on another, with bootstrap intervals.",
        epilog=SWEEP_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "sources",
        nargs="+",
        type=Path,
        metavar="SOURCE",
        help="model folder, OOF .npz/run folder, or probability folder",
    )
    parser.add_argument(
        "--data", type=Path, required=True, metavar="ROOT", help="labelled dataset root"
    )
    parser.add_argument(
        "--split",
        default="train",
        choices=("train", "test"),
        help="split of the root (default: train)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        required=True,
        metavar="OUT_DIR",
        help="folder for the tables, JSON and plots",
    )
    parser.add_argument(
        "--tune",
        default="locations",
        metavar="RULE",
        help="location:A[,B] | locations | folds:K | all (default: locations)",
    )
    parser.add_argument(
        "--cache", type=Path, metavar="DIR", help="probability cache (default: OUT_DIR/cache)"
    )
    parser.add_argument(
        "--views",
        default="d4",
        metavar="VIEWS",
        help="TTA views to cache for model folders: a preset or comma-separated "
        "views (default: d4, all eight)",
    )
    parser.add_argument("--quick", action="store_true", help="a smaller parameter space")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="NAME=V1,V2",
        help="values of one parameter (repeatable; TTA variants separated by ';')",
    )
    parser.add_argument("--rounds", type=int, default=2, help="coordinate-ascent rounds (2)")
    parser.add_argument(
        "--min-gain",
        type=float,
        default=0.0,
        help="keep a change only if it gains more than this on tuning chips",
    )
    parser.add_argument("--n-boot", type=int, default=1000, help="bootstrap resamples (1000)")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap and folds seed")
    parser.add_argument("--max-chips", type=int, metavar="N", help="first N chips only")
    parser.add_argument(
        "--ignore-value",
        type=int,
        metavar="V",
        help="label value left out of the score (e.g. 255; default: none)",
    )
    parser.add_argument("--device", default="cpu", help="torch device for model folders (cpu)")
    parser.add_argument(
        "--threads",
        type=int,
        metavar="N",
        help="CPU threads of torch while caching model folders (default: torch's; 1 is often "
        "fastest on a shared CPU)",
    )
    parser.add_argument(
        "--write-manifest",
        type=Path,
        metavar="DIR",
        help="copy the model folder here with the tuned setting",
    )
    parser.add_argument(
        "--force", action="store_true", help="overwrite a non-empty --write-manifest folder"
    )
    parser.add_argument("--no-plot", action="store_true", help="skip the matplotlib figure")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    parser.set_defaults(func=run_sweep)


def run_sweep(args: argparse.Namespace) -> int:
    """Run the sweep, write its outputs and print the table; exit 0."""
    # lazy: keeps `oncloudn --help` fast
    from oncloudn.errors import ConfigError
    from oncloudn.inference.sweep import (
        parse_overrides,
        sweep_postprocessing,
        write_results,
        write_tuned_model,
    )
    from oncloudn.inference.sweep.cache import make_sources

    overrides = parse_overrides(args.overrides)
    if args.write_manifest is not None:
        models = [s for s in make_sources(args.sources) if s.kind == "model"]
        if len(models) != 1 or len(args.sources) != 1:
            raise ConfigError(
                "--write-manifest needs exactly one SOURCE, a model folder (saved probabilities "
                "have no model to copy)"
            )
        if args.write_manifest.exists() and any(args.write_manifest.iterdir()) and not args.force:
            raise FileExistsError(
                f"--write-manifest folder {args.write_manifest} is not empty; choose a new "
                "folder or pass --force"
            )
    result = sweep_postprocessing(
        args.sources,
        args.data,
        split=args.split,
        tune=args.tune,
        cache_dir=args.cache or args.out / "cache",
        views=args.views,
        quick=args.quick,
        overrides=overrides,
        rounds=args.rounds,
        min_gain=args.min_gain,
        n_boot=args.n_boot,
        seed=args.seed,
        max_chips=args.max_chips,
        ignore_value=args.ignore_value,
        device=args.device,
        progress=not args.no_progress,
        threads=args.threads,
    )
    files = write_results(result, args.out)
    if not args.no_plot:
        # lazy: matplotlib is optional
        from oncloudn.inference.sweep.plots import plot_curves

        for source in result.final:
            suffix = "" if len(result.final) == 1 else f"-{source}"
            plot_curves(result, source=source, path=args.out / f"jaccard_vs_parameter{suffix}.png")
    print(result.markdown())
    print(f"results in {files['json'].parent} (sweep.json, sweep.md, per_location.csv, curves.csv)")
    if args.write_manifest is not None:
        source = next(iter(result.final))
        summary = {
            "tuned_on": "union of the tuning chips",
            "tune_rule": args.tune,
            "held_out": [s.row() for s in result.splits if s.source == source],
        }
        out = write_tuned_model(
            args.sources[0], args.write_manifest, result.final[source], summary, force=args.force
        )
        print(
            f"model folder with the tuned setting ({result.final[source].describe()}) "
            f"written to {out}"
        )
    return 0
