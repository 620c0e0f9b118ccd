# syntax=docker/dockerfile:1
# StreamSSL continual trainer, two flavours (build targets) from the repository root:
#   docker build -f deploy/docker/trainer.Dockerfile --target cpu  -t streamssl-trainer:cpu .   (default target)
#   docker build -f deploy/docker/trainer.Dockerfile --target cuda -t streamssl-trainer:cuda .
# Python packages: exactly the `trainer` extra of pyproject.toml. The flavours differ only in where torch comes
# from: `cpu` takes PyTorch's CPU-only wheels (no CUDA libraries), `cuda` takes PyPI's Linux wheels, which bring the
# CUDA and cuDNN runtime as nvidia-* wheels, so the base stays python:slim and only the host's driver is needed
# (NVIDIA container toolkit / GPU operator). DDP: override the command with `torchrun ... -m trainer ...`.
# Runs as uid 10001; writes only to /tmp, the checkpoint directory and the registry (mount volumes there).
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build-base
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore
RUN python -m venv /opt/streamssl
WORKDIR /src
COPY pyproject.toml README.md ./
COPY ingest ingest
COPY trainer trainer

FROM build-base AS build-cuda
RUN /opt/streamssl/bin/pip install ".[trainer]" \
    && /opt/streamssl/bin/python -m compileall -q /opt/streamssl

FROM build-base AS build-cpu
# The CPU-only torch wheels (`+cpu` local versions sort above PyPI's, so pip takes them).
ARG TORCH_CPU_INDEX=https://download.pytorch.org/whl/cpu
RUN /opt/streamssl/bin/pip install --extra-index-url "${TORCH_CPU_INDEX}" ".[trainer]" \
    && /opt/streamssl/bin/python -m compileall -q /opt/streamssl

FROM ${PYTHON_IMAGE} AS runtime-base
RUN groupadd --system --gid 10001 streamssl \
    && useradd --system --uid 10001 --gid 10001 --home-dir /tmp --no-create-home --shell /usr/sbin/nologin streamssl
ENV PATH=/opt/streamssl/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    XDG_CACHE_HOME=/tmp/.cache \
    TORCHINDUCTOR_CACHE_DIR=/tmp/torchinductor \
    TRITON_CACHE_DIR=/tmp/triton
WORKDIR /tmp
EXPOSE 9200 29500
# Liveness on the metrics port of the default command (/healthz; /readyz once it joined the consumer group).
HEALTHCHECK --interval=30s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python", "-c", "import urllib.request as u; u.urlopen('http://127.0.0.1:9200/healthz', timeout=4)"]
ENTRYPOINT ["streamssl-train"]
CMD ["--registry", "/registry", "--checkpoint-dir", "/checkpoints", "--metrics-port", "9200", "--log-format", "json"]

FROM runtime-base AS cuda
COPY --from=build-cuda /opt/streamssl /opt/streamssl
USER 10001:10001

FROM runtime-base AS cpu
COPY --from=build-cpu /opt/streamssl /opt/streamssl
USER 10001:10001
