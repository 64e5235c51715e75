"""Child process of the smp 0.2.1 parity test (run with the runtime's smp first on sys.path).

Usage: ``python smp_parity_child.py <case-folder>``; for each ``<name>.pt`` holding
``{"arch", "encoder_name", "state_dict", "input", "output"}`` it rebuilds the network with
``build_network("smp", ...)``, loads the state dict and prints one JSON line per case:
``{"case", "smp", "ok", "max_abs_diff" | "error"}``.
"""

import json
import os
import sys

import segmentation_models_pytorch as smp
import torch

from oncloudn.runtime.networks import build_network


def main(folder: str) -> None:
    torch.set_num_threads(1)
    for name in sorted(os.listdir(folder)):
        if not name.endswith(".pt"):
            continue
        case = torch.load(os.path.join(folder, name), map_location="cpu")
        record = {"case": name[:-3], "smp": smp.__version__}
        try:
            args = {"arch": case["arch"], "encoder_name": case["encoder_name"]}
            network = build_network("smp", args, case["input"].shape[1], 1).eval()
            network.load_state_dict(case["state_dict"])
            with torch.no_grad():
                output = network(case["input"])
            record["max_abs_diff"] = float((output - case["output"]).abs().max())
            record["ok"] = True
        except Exception as error:  # noqa: BLE001 - reported to the parent test
            record["ok"] = False
            record["error"] = f"{type(error).__name__}: {str(error)[:300]}"
        print(json.dumps(record), flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
