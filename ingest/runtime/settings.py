"""Layered configuration: a YAML file, overridden by command-line flags, overridden by ``STREAMSSL_*`` variables.

Every service defines a subclass of :class:`CommonSettings` with its own fields. Nested fields are set from the
environment with a double underscore, e.g. ``STREAMSSL_KAFKA__SECURITY_PROTOCOL=SASL_SSL``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from ingest.bus import KafkaSettings, parse_bus_url
from ingest.contract.topics import DEFAULT_WINDOW_TOPIC, validate_topic

ENV_PREFIX = "STREAMSSL_"


class ConfigError(Exception):
    """The configuration file or a setting is invalid; the message says which and why."""


class CommonSettings(BaseSettings):
    """Settings every service shares."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, env_nested_delimiter="__", extra="forbid", frozen=True)

    bus: str = Field("embedded://", description="embedded://[NAME] or kafka://HOST:PORT[,HOST:PORT]")
    topic: str = Field(DEFAULT_WINDOW_TOPIC, description="topic of windows")
    metrics_port: int = Field(0, ge=0, le=65535, description="Prometheus port, 0 = off")
    log_format: Literal["text", "json"] = "text"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    kafka: KafkaSettings = Field(default_factory=KafkaSettings)

    @field_validator("bus")
    @classmethod
    def _check_bus(cls, value: str) -> str:
        parse_bus_url(value)
        return value

    @field_validator("topic")
    @classmethod
    def _check_topic(cls, value: str) -> str:
        return validate_topic(value)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The product's rule: environment beats flags, flags beat the file (init carries file + flags merged).
        return (env_settings, init_settings)


SettingsT = TypeVar("SettingsT", bound=CommonSettings)


def read_config_file(path: Path) -> dict[str, Any]:
    """Read a YAML mapping, raising :class:`ConfigError` with the file name on any problem."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise ConfigError(f"cannot read config file {path}: {error.strerror or error}") from error
    except yaml.YAMLError as error:
        raise ConfigError(f"config file {path} is not valid YAML: {error}") from error
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of settings, got {type(data).__name__}")
    return data


def _merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def load_settings(
    settings_cls: type[SettingsT],
    config_file: Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    extend: Mapping[str, list[Any]] | None = None,
) -> SettingsT:
    """Build settings from the file, then flag ``overrides`` (None values ignored), then the environment.

    ``extend`` appends to a list setting of the file instead of replacing it (a camera given by flags joins the
    file's ``cameras``).
    """
    from pydantic import ValidationError

    layered = read_config_file(config_file) if config_file is not None else {}
    flags = {key: value for key, value in (overrides or {}).items() if value is not None}
    merged = _merge(layered, flags)
    for key, items in (extend or {}).items():
        merged[key] = [*merged.get(key, []), *items]
    try:
        return settings_cls(**merged)
    except ValidationError as error:
        source = f" (config file {config_file}, flags, {ENV_PREFIX}* environment)" if config_file else ""
        problems = "; ".join(
            f"{'.'.join(str(part) for part in issue['loc']) or 'settings'}: {issue['msg']}" for issue in error.errors()
        )
        raise ConfigError(f"invalid settings{source}: {problems}") from error
