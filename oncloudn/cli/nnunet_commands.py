"""nnU-Net v2 commands: ``nnunet export`` (raw dataset + our folds) and ``nnunet import``."""

from __future__ import annotations

import argparse
from pathlib import Path

EXPORT_DESCRIPTION = """\
Write the train split of DATA_ROOT as the nnU-Net v2 raw dataset OUT/DatasetNNN_NAME:
imagesTr/<chip>_0000..0003.tif (B02, B03, B04, B08, hard-linked by default), labelsTr/<chip>.tif
(label 255 becomes nnU-Net's 'ignore' label), dataset.json (NaturalImage2DIO reader) and our
location-grouped folds as splits_final.json.

When to run it: before `nnUNetv2_plan_and_preprocess`. Planning (nnunetv2 2.8.1) copies the raw
folder's splits_final.json into nnUNet_preprocessed/DatasetNNN_NAME/ when none is there, and
stops with an AssertionError when a different one is there (e.g. nnU-Net's random split of an
earlier run). For a dataset planned before, pass --preprocessed $nnUNet_preprocessed (with
--force to replace other splits there) so that training uses our folds."""

EXPORT_EPILOG = """\
examples:
  oncloudn nnunet export data/sample $nnUNet_raw --dataset-id 501 --n-folds 5
  oncloudn nnunet export data/train $nnUNet_raw --dataset-id 501 --folds-file folds.csv \\
      --preprocessed $nnUNet_preprocessed --force
then: nnUNetv2_plan_and_preprocess -d 501 -c 2d; nnUNetv2_train 501 2d 0 (per fold)"""

IMPORT_DESCRIPTION = """\
Make a model folder (kind 'nnunet') of an nnU-Net v2 trained-model folder
(nnUNet_results/DatasetNNN_NAME/nnUNetTrainer__nnUNetPlans__2d): plans.json, dataset.json and
fold_X/checkpoint_final.pth are copied into OUT/nnunet (or referenced with --reference). It
predicts like nnU-Net (crop to nonzero, z-score, Gaussian sliding window, mirroring, folds
averaged) with torch and dynamic-network-architectures only; the competition runtime cannot run
it (a teacher). Checkpoints are pickles: import only checkpoints you trust."""

IMPORT_EPILOG = """\
examples:
  oncloudn nnunet import $nnUNet_results/Dataset501_OnCloudN/nnUNetTrainer__nnUNetPlans__2d \\
      models/nnunet-teacher --folds 0 1 2 3 4
  oncloudn predict models/nnunet-teacher data/sample/test_features preds/"""


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``nnunet export`` and ``nnunet import``."""
    parser = subparsers.add_parser(
        "nnunet", help="nnU-Net v2: export a dataset with our folds, import a trained model"
    )
    commands = parser.add_subparsers(dest="nnunet_command", metavar="COMMAND", required=True)
    _register_export(commands)
    _register_import(commands)


def _register_export(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "export",
        help="write an nnU-Net v2 raw dataset with our location-grouped folds",
        description=EXPORT_DESCRIPTION,
        epilog=EXPORT_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("root", type=Path, metavar="DATA_ROOT", help="dataset root (train split)")
    parser.add_argument("out", type=Path, metavar="OUT", help="the nnUNet_raw folder")
    parser.add_argument("--dataset-id", type=int, required=True, help="nnU-Net dataset id 1..999")
    parser.add_argument("--name", default="OnCloudN", help="dataset name (default OnCloudN)")
    folds = parser.add_mutually_exclusive_group()
    folds.add_argument("--folds-file", type=Path, help="folds CSV chip_id,location,fold")
    folds.add_argument(
        "--n-folds", type=int, default=5, help="location-grouped folds to make (default 5)"
    )
    parser.add_argument("--seed", type=int, default=0, help="folds tie-break seed (default 0)")
    parser.add_argument(
        "--preprocessed",
        type=Path,
        help="also write splits_final.json into this nnUNet_preprocessed folder",
    )
    parser.add_argument(
        "--link",
        choices=("hard", "symlink", "copy"),
        default="hard",
        help="how band files are placed (default hard: hard links, copies across devices)",
    )
    parser.add_argument("--force", action="store_true", help="replace an existing export")
    parser.set_defaults(func=_run_export)


def _register_import(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "import",
        help="make a model folder (kind nnunet) of an nnU-Net v2 trained model",
        description=IMPORT_DESCRIPTION,
        epilog=IMPORT_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("trained", type=Path, metavar="TRAINED_DIR", help="trained-model folder")
    parser.add_argument("out", type=Path, metavar="OUT", help="model folder to write")
    parser.add_argument("--folds", nargs="+", help="folds to average (default: all trained)")
    parser.add_argument(
        "--checkpoint", default="checkpoint_final.pth", help="checkpoint file in each fold_X"
    )
    parser.add_argument(
        "--reference", action="store_true", help="reference TRAINED_DIR instead of copying it"
    )
    parser.add_argument(
        "--tile-step", type=float, default=0.5, help="sliding-window step, fraction of the patch"
    )
    parser.add_argument("--no-mirroring", action="store_true", help="no mirror TTA")
    parser.add_argument("--name", help="model name (default: dataset and configuration)")
    parser.add_argument("--force", action="store_true", help="replace an existing model folder")
    parser.set_defaults(func=_run_import)


def _run_export(args: argparse.Namespace) -> int:
    # lazy: keeps `oncloudn --help` fast
    from oncloudn.data.nnunet_export import export_nnunet_dataset

    summary = export_nnunet_dataset(
        args.root,
        args.out,
        args.dataset_id,
        name=args.name,
        folds_file=args.folds_file,
        n_folds=args.n_folds,
        seed=args.seed,
        preprocessed=args.preprocessed,
        link=args.link,
        force=args.force,
    )
    ignore = "" if summary.ignore_label is None else f", ignore label {summary.ignore_label}"
    print(f"wrote {summary.folder}: {summary.chips} cases, {summary.folds} folds{ignore}")
    for path in summary.splits_copies:
        print(f"wrote {path}")
    return 0


def _run_import(args: argparse.Namespace) -> int:
    # lazy: keeps `oncloudn --help` fast
    from oncloudn.models.nnunet_model import import_nnunet_model

    out = import_nnunet_model(
        args.trained,
        args.out,
        folds=args.folds,
        checkpoint=args.checkpoint,
        copy=not args.reference,
        tile_step=args.tile_step,
        mirroring=not args.no_mirroring,
        name=args.name,
        force=args.force,
    )
    print(f"wrote model folder {out}")
    return 0
