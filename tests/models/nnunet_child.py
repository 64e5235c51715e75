"""Child process of the nnU-Net parity test: nnunetv2 itself plans, trains and predicts.

nnunetv2 reads ``nnUNet_raw``, ``nnUNet_preprocessed`` and ``nnUNet_results`` when it is
first imported, so it runs here, in a process whose environment the test sets.

Usage: ``python nnunet_child.py DATASET_ID CHIPS.npz OUT.npz``: plans and preprocesses the
exported raw dataset (``2d``), trains folds 0 and 1 for one epoch of two iterations on the
CPU, and writes to ``OUT.npz``: ``split_<fold>_train`` / ``split_<fold>_val`` (the trainer's
``do_split()``), ``read_<case>`` (one case as nnU-Net's reader returns it), ``proba_<name>``
(``nnUNetPredictor``'s probabilities ``[K, H, W]`` of each ``[C, H, W]`` array in
``CHIPS.npz``) and ``model_dir`` (the trained-model folder).
"""

import os
import sys

import numpy as np
import torch


def plan(dataset_id: int) -> None:
    from nnunetv2.experiment_planning.dataset_fingerprint.fingerprint_extractor import (
        DatasetFingerprintExtractor,
    )
    from nnunetv2.experiment_planning.plan_and_preprocess_api import (
        extract_fingerprints,
        plan_experiments,
        preprocess,
    )

    init = DatasetFingerprintExtractor.__init__

    def fewer_samples(self, *args, **kwargs) -> None:
        # Intensity samples (10^8 by default) feed CT normalization only; ZScore ignores them.
        init(self, *args, **kwargs)
        self.num_foreground_voxels_for_intensitystats = 10**5

    DatasetFingerprintExtractor.__init__ = fewer_samples
    extract_fingerprints([dataset_id], num_processes=1, check_dataset_integrity=False)
    plan_experiments([dataset_id])
    preprocess([dataset_id], configurations=("2d",), num_processes=(1,), verbose=False)


def train(dataset_id: int, fold: int, results: dict) -> str:
    from batchgenerators.utilities.file_and_folder_operations import load_json
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
    from nnunetv2.utilities.dataset_name_id_conversion import maybe_convert_to_dataset_name

    name = maybe_convert_to_dataset_name(dataset_id)
    folder = os.path.join(os.environ["nnUNet_preprocessed"], name)  # noqa: SIM112
    plans = load_json(os.path.join(folder, "nnUNetPlans.json"))
    plans["continue_training"] = False  # nnunetv2 2.8.1 pops this key
    dataset_json = load_json(os.path.join(folder, "dataset.json"))
    trainer = nnUNetTrainer(plans, "2d", fold, dataset_json, device=torch.device("cpu"))
    trainer.num_epochs = 1
    trainer.num_iterations_per_epoch = 2
    trainer.num_val_iterations_per_epoch = 1
    train_keys, val_keys = trainer.do_split()
    results[f"split_{fold}_train"] = np.array(sorted(train_keys))
    results[f"split_{fold}_val"] = np.array(sorted(val_keys))
    trainer.run_training()
    return trainer.output_folder_base


def predict(model_dir: str, chips: dict, results: dict) -> None:
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    predictor = nnUNetPredictor(device=torch.device("cpu"), allow_tqdm=False)
    predictor.initialize_from_trained_model_folder(model_dir, use_folds=(0, 1))
    for name, image in chips.items():
        data = image.astype(np.float32)[:, None]  # what NaturalImage2DIO returns: (C, 1, H, W)
        properties = {"spacing": (999, 1, 1)}
        _, proba = predictor.predict_single_npy_array(data, properties, None, None, True)
        results[f"proba_{name}"] = proba[:, 0]


def main(dataset_id: int, chips_path: str, out_path: str) -> None:
    torch.set_num_threads(1)  # the parent predicts with one thread too: same kernels, same bits
    from nnunetv2.imageio.natural_image_reader_writer import NaturalImage2DIO
    from nnunetv2.utilities.dataset_name_id_conversion import maybe_convert_to_dataset_name

    results: dict = {}
    name = maybe_convert_to_dataset_name(dataset_id)
    raw = os.path.join(os.environ["nnUNet_raw"], name)  # noqa: SIM112
    case = sorted(os.listdir(os.path.join(raw, "labelsTr")))[0][: -len(".tif")]
    images = [os.path.join(raw, "imagesTr", f"{case}_{i:04d}.tif") for i in range(4)]
    results[f"read_{case}"] = NaturalImage2DIO().read_images(images)[0][:, 0]
    plan(dataset_id)
    # Training data loaded in this process (planning needs >= 1).
    os.environ["nnUNet_n_proc_DA"] = "0"  # noqa: SIM112
    model_dir = ""
    for fold in (0, 1):
        model_dir = train(dataset_id, fold, results)
    with np.load(chips_path) as chips:
        predict(model_dir, dict(chips), results)
    results["model_dir"] = np.array(model_dir)
    np.savez(out_path, **results)


if __name__ == "__main__":
    main(int(sys.argv[1]), sys.argv[2], sys.argv[3])
