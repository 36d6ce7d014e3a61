# llmdeploy operator image: multi-stage, non-root, works with a read-only root filesystem.
# Base pinned by digest (python:3.11-slim-bookworm; digest read from a Renovate-pinned public
# Dockerfile, immich-app/immich forks, machine-learning/Dockerfile; re-check with
# `crane digest python:3.11-slim-bookworm` when bumping).
ARG PYTHON_IMAGE=python:3.11-slim-bookworm@sha256:e2d3af735aff6eeee600b1933bedd99da6645fedf572cc12ef4cc1331f2ceebe

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator ./operator
COPY templates ./templates
RUN python -m venv /opt/llmdeploy && /opt/llmdeploy/bin/pip install .

FROM ${PYTHON_IMAGE}
COPY --from=build /opt/llmdeploy /opt/llmdeploy
ENV PATH=/opt/llmdeploy/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp
USER 65532:65532
EXPOSE 8080 9090
ENTRYPOINT ["llmdeploy"]
CMD ["run"]
