# syntax=docker/dockerfile:1
# StreamSSL ingest service (cameras -> windows on Kafka). Build from the repository root:
#   docker build -f deploy/docker/ingest.Dockerfile -t streamssl-ingest .
# Python packages: exactly the `ingest` extra of pyproject.toml (PyAV wheels bundle FFmpeg: no apt packages needed).
# Runs as uid 10001, writes nothing outside /tmp (mount an emptyDir there with a read-only root filesystem).
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore
RUN python -m venv /opt/streamssl
WORKDIR /src
COPY pyproject.toml README.md ./
COPY ingest ingest
RUN /opt/streamssl/bin/pip install ".[ingest]" \
    && /opt/streamssl/bin/python -m compileall -q /opt/streamssl

FROM ${PYTHON_IMAGE} AS runtime
RUN groupadd --system --gid 10001 streamssl \
    && useradd --system --uid 10001 --gid 10001 --home-dir /tmp --no-create-home --shell /usr/sbin/nologin streamssl
COPY --from=build /opt/streamssl /opt/streamssl
ENV PATH=/opt/streamssl/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp
WORKDIR /tmp
USER 10001:10001
EXPOSE 9100
# Liveness on the metrics port of the default command (/healthz; /readyz waits for the producer and a camera).
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import urllib.request as u; u.urlopen('http://127.0.0.1:9100/healthz', timeout=4)"]
ENTRYPOINT ["streamssl-ingest"]
CMD ["--config", "/etc/streamssl/cameras.yaml", "--metrics-port", "9100", "--log-format", "json"]
