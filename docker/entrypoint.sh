#!/bin/bash
# Entrypoint of the oncloudn runtime image: the official one's steps
# (drivendataorg/cloud-cover-runtime, runtime/entrypoint.sh), with the four checks done by
# oncloudn's own check code instead of their tests/ folder:
#   unzip submission/submission.zip into /codeexecution, run `python main.py` in the image's
#   conda env, check predictions/, tar them into submission/submission.tar.gz, and keep the
#   whole log in submission/log.txt.
# Overrides (for tests outside Docker): ONCLOUDN_CODE_DIR (default /codeexecution),
# ONCLOUDN_CHECKS_DIR (default /opt/oncloudn-checks), ONCLOUDN_PYTHON (default: the image's
# `conda run --no-capture-output -n condaenv python`).
set -euo pipefail

CODE_DIR="${ONCLOUDN_CODE_DIR:-/codeexecution}"
CHECKS_DIR="${ONCLOUDN_CHECKS_DIR:-/opt/oncloudn-checks}"
if [ -n "${ONCLOUDN_PYTHON:-}" ]; then
    PYTHON=("${ONCLOUDN_PYTHON}")
else
    PYTHON=(conda run --no-capture-output -n condaenv python)
fi

main () {
    set -e
    cd "${CODE_DIR}"

    if [ -z "${ONCLOUDN_PYTHON:-}" ]; then
        echo "List installed packages"
        echo "######################################"
        conda list -n condaenv
        echo "######################################"
    fi

    echo "Unpacking submission..."
    unzip -q ./submission/submission.zip -d ./
    ls -alh

    if [ -z "$(find data/test_features -type f -iname '*.tif' | head -1)" ]; then
        echo "ERROR: No input files detected in data/test_features"
        return 1
    fi
    if [ ! -f "main.py" ]; then
        echo "ERROR: Could not find main.py in submission.zip"
        return 1
    fi

    echo "Running code submission with Python"
    "${PYTHON[@]}" main.py

    echo "Testing that submission is valid"
    "${PYTHON[@]}" "${CHECKS_DIR}/check_submission.py" predictions data/test_features

    echo "Compressing files in a gzipped tar archive for submission"
    (cd predictions && tar czf ../submission/submission.tar.gz -- *.tif)
    echo "... finished"
    du -h submission/submission.tar.gz
}

set +e
main |& tee "${CODE_DIR}/submission/log.txt"
exit_code=${PIPESTATUS[0]}
set -e
echo "================ END ================" | tee -a "${CODE_DIR}/submission/log.txt"
echo "exit code ${exit_code}"
exit "${exit_code}"
