"""The runtime's four checks on a predictions folder, run inside the Docker image.

Copied into the image as ``/opt/oncloudn-checks/check_submission.py`` beside the few
``oncloudn`` modules it needs (see the top-level ``Dockerfile``); runs on the image's Python
3.9. The rules are :mod:`oncloudn.scoring.checks`, the same code ``run-local`` uses on the
host: one ``<chip_id>.tif`` per non-hidden folder of ``test_features`` and nothing else, each
at most 524,288 bytes, single-band 512 x 512, values 0 and 1 only.

Usage: ``python check_submission.py PREDICTIONS_DIR TEST_FEATURES_DIR``; exit status 0 when
every rule holds, 1 (listing the problems) when one breaks.
"""

import sys

from oncloudn.runtime.chipio import list_chip_ids
from oncloudn.scoring.checks import check_prediction_folder


def main(argv):
    """Check ``argv[0]`` (predictions) against the chips of ``argv[1]`` (test_features)."""
    if len(argv) != 2:
        print("usage: check_submission.py PREDICTIONS_DIR TEST_FEATURES_DIR", file=sys.stderr)
        return 2
    predictions, features = argv
    chip_ids = list_chip_ids(features)
    problems = check_prediction_folder(predictions, chip_ids, progress=False)
    for problem in problems:
        print(f"FAILED: {problem}")
    if problems:
        print(f"{len(problems)} problem(s) in {predictions}")
        return 1
    print(f"passed: {len(chip_ids)} predictions in {predictions} follow the runtime's rules")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
