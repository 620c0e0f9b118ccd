"""The registry on disk: publish a version atomically, move the production pointer, verify a version's checksums."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import uuid
from pathlib import Path

from pydantic import ValidationError

from ingest.registry.metadata import ModelMetadata
from ingest.runtime.durable_files import fsync_directory, os_error_reason, write_atomically, write_durably

PRODUCTION_POINTER = "production"
METADATA_FILE = "metadata.json"
CHECKSUM_FILE = "SHA256SUMS"

_VERSION = re.compile(r"[1-9][0-9]{0,8}")
_CHECKSUM_LINE = re.compile(r"([0-9a-f]{64}) [ *](.+)")


class RegistryError(Exception):
    """A registry operation failed, or a version is missing, incomplete, tampered with or malformed."""


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def versions(registry: Path, model: str) -> list[str]:
    """Published versions of ``model``, oldest first."""
    model_dir = registry / model
    if not model_dir.is_dir():
        return []
    return sorted((p.name for p in model_dir.iterdir() if p.is_dir() and _VERSION.fullmatch(p.name)), key=int)


def publish_version(registry: Path, metadata: ModelMetadata, files: dict[str, Path]) -> str:
    """Copy ``files`` (registry file name → source path) and the metadata in as the next version, atomically.

    Every file named in ``metadata.files`` must be given. Returns the new version.
    """
    named = {f.path for f in metadata.files}
    if named != set(files):
        raise RegistryError(f"metadata lists {sorted(named)} but the files given are {sorted(files)}")
    model_dir = registry / metadata.model
    staging = model_dir / f".staging-{uuid.uuid4().hex}"
    try:
        model_dir.mkdir(parents=True, exist_ok=True)
        staging.mkdir()
        for name, source in files.items():
            shutil.copyfile(source, staging / name)
        existing = versions(registry, metadata.model)
        version = str(int(existing[-1]) + 1) if existing else "1"
        final = metadata.model_copy(update={"version": version})
        write_durably(staging / METADATA_FILE, final.model_dump_json(by_alias=True, indent=2).encode())
        sums = "".join(f"{sha256_file(staging / name)}  {name}\n" for name in sorted([*files, METADATA_FILE]))
        write_durably(staging / CHECKSUM_FILE, sums.encode())
        for name in files:
            with (staging / name).open("rb") as stream:
                os.fsync(stream.fileno())
        fsync_directory(staging)
        try:
            staging.rename(model_dir / version)
        except OSError as error:  # another publisher took this version number first
            raise RegistryError(f"version {version} of {metadata.model} appeared while publishing: {error}") from error
    except OSError as error:  # a full disk, say: nothing was renamed into place; finally removes the staging copy
        raise RegistryError(
            f"could not publish a version of {metadata.model} in {model_dir}: {os_error_reason(error)}. No version was "
            f"added; the published versions and the {PRODUCTION_POINTER} pointer are unchanged"
        ) from error
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    fsync_directory(model_dir)
    return version


def set_production(registry: Path, model: str, version: str) -> None:
    """Point ``production`` at ``version`` (which must verify), replacing the pointer atomically."""
    verify_version(registry / model / version)
    try:
        write_atomically(registry / model / PRODUCTION_POINTER, f"{version}\n".encode())
    except OSError as error:  # write_atomically removed its temporary file: the old pointer stands
        raise RegistryError(
            f"could not point {PRODUCTION_POINTER} of {model} at version {version}: {os_error_reason(error)}. The "
            "pointer is unchanged"
        ) from error


def production_version(registry: Path, model: str) -> str | None:
    """The version ``production`` names, or None if nothing was promoted yet."""
    pointer = registry / model / PRODUCTION_POINTER
    try:
        version = pointer.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None
    except OSError as error:  # a pointer this process may not read, a failing disk: not "nothing promoted"
        raise RegistryError(f"cannot read {pointer}: {os_error_reason(error)}") from error
    if not _VERSION.fullmatch(version):
        raise RegistryError(f"{pointer} holds {version!r}, not a version number")
    return version


def verify_version(directory: Path) -> ModelMetadata:
    """Check every SHA-256 sum and the metadata of a published version; return the metadata.

    Raises :class:`RegistryError` naming the first problem: a missing or extra file, a checksum mismatch (tampering
    or corruption), metadata that does not match the schema or its directory, or a file that cannot be read.
    """
    try:
        return _verify(directory)
    except OSError as error:  # a file this process may not read (its mode), a directory where a file should be
        name = error.filename or directory
        raise RegistryError(f"cannot read {name} of {directory}: {os_error_reason(error)}") from error


def _verify(directory: Path) -> ModelMetadata:
    sums_path = directory / CHECKSUM_FILE
    try:
        lines = sums_path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError as error:
        raise RegistryError(f"{directory} has no {CHECKSUM_FILE}: not a complete published version") from error
    expected: dict[str, str] = {}
    for line in lines:
        match = _CHECKSUM_LINE.fullmatch(line.strip())
        if not match or "/" in match[2]:
            raise RegistryError(f"{sums_path}: malformed line {line!r}")
        expected[match[2]] = match[1]
    present = {p.name for p in directory.iterdir() if p.is_file() and p.name != CHECKSUM_FILE}
    if present != set(expected):
        raise RegistryError(
            f"{directory}: files {sorted(present ^ set(expected))} are not both on disk and in {CHECKSUM_FILE}"
        )
    for name, digest in expected.items():
        actual = sha256_file(directory / name)
        if actual != digest:
            raise RegistryError(f"{directory / name}: SHA-256 {actual} does not match {CHECKSUM_FILE} ({digest})")
    try:
        metadata = ModelMetadata.model_validate_json((directory / METADATA_FILE).read_bytes())
    except FileNotFoundError as error:
        raise RegistryError(f"{directory} has no {METADATA_FILE}") from error
    except ValidationError as error:
        raise RegistryError(f"{directory / METADATA_FILE} is not valid model metadata: {error}") from error
    if metadata.version != directory.name or metadata.model != directory.parent.name:
        raise RegistryError(
            f"{directory}: metadata says {metadata.model} version {metadata.version}, the directory says otherwise"
        )
    missing = [f.path for f in metadata.files if not (directory / f.path).is_file()]
    if missing:
        raise RegistryError(f"{directory}: metadata lists missing files {missing}")
    return metadata
