# Runs a packed submission.zip the way the On Cloud N platform did, in DrivenData's own
# published runtime image (not a rebuild of its conda environment): Python 3.9.7, PyTorch 1.8,
# smp 0.2.1, ... in the conda env `condaenv`, user `appuser`, working folder /codeexecution.
#
# Pinned by tag only: no digest for these tags could be found in public sources, and the
# image was not pulled or built where this file was written (no Docker there). Pin a digest
# once you have pulled it: `docker inspect --format '{{index .RepoDigests 0}}' IMAGE`.
#
#   docker build --build-arg CPU_OR_GPU=cpu -t oncloudn-runtime:cpu .
#   oncloudn run-local submission.zip DATA OUT --docker        (builds and runs it)
ARG CPU_OR_GPU=cpu
FROM drivendata/cloud-cover-competition:${CPU_OR_GPU}-latest

# The four checks: oncloudn.scoring.checks with the modules it imports (Python 3.9-safe),
# outside /codeexecution so that a zip's own vendored `oncloudn/` never meets them.
COPY oncloudn/__init__.py oncloudn/errors.py /opt/oncloudn-checks/oncloudn/
COPY oncloudn/runtime/ /opt/oncloudn-checks/oncloudn/runtime/
COPY oncloudn/scoring/checks.py /opt/oncloudn-checks/oncloudn/scoring/
COPY docker/check_submission.py /opt/oncloudn-checks/

WORKDIR /codeexecution
# uid 1000 is the image's non-root `appuser`, which runs the submission
COPY --chown=1000:1000 docker/entrypoint.sh /codeexecution/entrypoint.sh
USER 1000
CMD ["/bin/bash", "/codeexecution/entrypoint.sh"]
