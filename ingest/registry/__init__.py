"""The model registry contract: how the trainer hands encoders to serving nodes, on a filesystem (or a volume
both mount).

Layout::

    REGISTRY/<model>/<version>/            one published version, immutable once renamed into place
        frame_encoder.onnx, clip_encoder.onnx, predictor.onnx, [*.int8.onnx]
        metadata.json                      the ModelMetadata below (schema "streamssl.model/1")
        SHA256SUMS                         `sha256sum -c` format, covering every other file in the directory
    REGISTRY/<model>/production            one line: the version serving nodes should follow

Versions are decimal integers, increasing (``1``, ``2``, …). A version is written to a hidden temporary directory,
fsynced and renamed into place, so a reader never sees half of one; the ``production`` pointer is replaced the same
way. Readers verify every checksum and the metadata before they use a version.

The ONNX interfaces (the contract between the trainer's export and serving):

* ``frame_encoder``: ``frames`` uint8 ``[N, H, W, C]`` (RGB or gray pixels, normalisation inside the graph) →
  ``embedding`` float32 ``[N, D]``.
* ``clip_encoder``: ``frames`` uint8 ``[N, T, H, W, C]`` → ``frame_embeddings`` float32 ``[N, T, D]`` and
  ``clip_embedding`` float32 ``[N, D]``.
* ``predictor``: ``context`` float32 ``[N, K, D]`` (embeddings of the first K frames) → ``predicted`` float32
  ``[N, M, D]`` (embeddings of the next M frames). The anomaly score compares them with the frames' actual embeddings.
* ``pixel_predictor`` (optional): ``frames`` uint8 ``[N, K, H, W, C]`` and ``future_embedding`` float32 ``[N, D]``
  (the predictor's first predicted embedding, ``predicted[:, 0]``) → ``next_frame`` float32 ``[N, h, w, C]`` in
  [0, 1], a low-resolution prediction of frame K+1. Taking the predictor's output as an input spares the graph
  encoding the K context frames a second time. Versions published before take ``frames`` alone (and encode them
  inside); readers accept both.
"""

from ingest.registry.metadata import (
    DEFAULT_MODEL_NAME,
    SCHEMA,
    InputFormat,
    ModelFile,
    ModelMetadata,
    Role,
    TensorSpec,
)
from ingest.registry.store import (
    CHECKSUM_FILE,
    METADATA_FILE,
    PRODUCTION_POINTER,
    RegistryError,
    production_version,
    publish_version,
    set_production,
    sha256_file,
    verify_version,
    versions,
)

__all__ = [
    "CHECKSUM_FILE",
    "DEFAULT_MODEL_NAME",
    "METADATA_FILE",
    "PRODUCTION_POINTER",
    "SCHEMA",
    "InputFormat",
    "ModelFile",
    "ModelMetadata",
    "RegistryError",
    "Role",
    "TensorSpec",
    "production_version",
    "publish_version",
    "set_production",
    "sha256_file",
    "verify_version",
    "versions",
]
