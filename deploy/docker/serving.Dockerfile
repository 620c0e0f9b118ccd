# syntax=docker/dockerfile:1
# StreamSSL serving node (onnxruntime, no PyTorch), two flavours (build targets) from the repository root:
#   docker build -f deploy/docker/serving.Dockerfile --target cpu  -t streamssl-serving:cpu .   (default target)
#   docker build -f deploy/docker/serving.Dockerfile --target cuda -t streamssl-serving:cuda .
# Python packages: exactly the `serving` extra of pyproject.toml; the `cuda` flavour swaps onnxruntime for
# onnxruntime-gpu (same version range) on NVIDIA's CUDA + cuDNN runtime base, and serves with --providers cuda,cpu.
# Runs as uid 10001 and writes nothing outside /tmp; the registry is mounted read-only.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm
ARG CUDA_IMAGE=nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04
ARG CUDA_BUILD_IMAGE=ubuntu:24.04

FROM ${PYTHON_IMAGE} AS build-cpu
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore
RUN python -m venv /opt/streamssl
WORKDIR /src
COPY pyproject.toml README.md ./
COPY ingest ingest
COPY serving serving
RUN /opt/streamssl/bin/pip install ".[serving]" \
    && /opt/streamssl/bin/python -m compileall -q /opt/streamssl

# Built on the Ubuntu release the CUDA image is based on, so the venv's /usr/bin/python3 is the same there.
FROM ${CUDA_BUILD_IMAGE} AS build-cuda
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore DEBIAN_FRONTEND=noninteractive
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv \
    && rm -rf /var/lib/apt/lists/* \
    && python3 -m venv /opt/streamssl
WORKDIR /src
COPY pyproject.toml README.md ./
COPY ingest ingest
COPY serving serving
# onnxruntime-gpu provides the same `onnxruntime` module; both installed would overwrite each other's files.
RUN /opt/streamssl/bin/pip install ".[serving]" \
    && /opt/streamssl/bin/pip uninstall -y onnxruntime \
    && /opt/streamssl/bin/pip install "onnxruntime-gpu>=1.18" \
    && /opt/streamssl/bin/python -m compileall -q /opt/streamssl

FROM ${CUDA_IMAGE} AS cuda
ENV DEBIAN_FRONTEND=noninteractive
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 streamssl \
    && useradd --system --uid 10001 --gid 10001 --home-dir /tmp --no-create-home --shell /usr/sbin/nologin streamssl
COPY --from=build-cuda /opt/streamssl /opt/streamssl
ENV PATH=/opt/streamssl/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp
WORKDIR /tmp
USER 10001:10001
EXPOSE 8080
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import urllib.request as u; u.urlopen('http://127.0.0.1:8080/v2/health/live', timeout=4)"]
ENTRYPOINT ["streamssl-serve"]
CMD ["--registry", "/registry", "--port", "8080", "--providers", "cuda,cpu", "--log-format", "json"]

FROM ${PYTHON_IMAGE} AS cpu
RUN groupadd --system --gid 10001 streamssl \
    && useradd --system --uid 10001 --gid 10001 --home-dir /tmp --no-create-home --shell /usr/sbin/nologin streamssl
COPY --from=build-cpu /opt/streamssl /opt/streamssl
ENV PATH=/opt/streamssl/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp
WORKDIR /tmp
USER 10001:10001
EXPOSE 8080
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import urllib.request as u; u.urlopen('http://127.0.0.1:8080/v2/health/live', timeout=4)"]
ENTRYPOINT ["streamssl-serve"]
CMD ["--registry", "/registry", "--port", "8080", "--log-format", "json"]
