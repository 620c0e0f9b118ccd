"""Layered configuration: YAML file < command-line flags < STREAMSSL_* environment variables."""

from __future__ import annotations

from pathlib import Path

import pytest

from ingest.runtime.settings import CommonSettings, ConfigError, load_settings


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("STREAMSSL_BUS", "STREAMSSL_TOPIC", "STREAMSSL_METRICS_PORT", "STREAMSSL_KAFKA__CLIENT_ID"):
        monkeypatch.delenv(name, raising=False)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return path


def test_defaults_without_any_source() -> None:
    settings = load_settings(CommonSettings)
    assert settings.bus == "embedded://"
    assert settings.topic == "streamssl.windows"
    assert settings.metrics_port == 0


def test_flags_override_the_file_and_environment_overrides_both(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = write(
        tmp_path, "bus: kafka://file:9092\ntopic: from.file\nmetrics_port: 9100\nkafka:\n  client_id: file\n"
    )
    from_file = load_settings(CommonSettings, config)
    assert (from_file.bus, from_file.topic, from_file.metrics_port) == ("kafka://file:9092", "from.file", 9100)

    flagged = load_settings(CommonSettings, config, {"topic": "from.flag", "metrics_port": None})
    assert flagged.topic == "from.flag"
    assert flagged.metrics_port == 9100, "an unset flag must not erase the file's value"

    monkeypatch.setenv("STREAMSSL_TOPIC", "from.env")
    monkeypatch.setenv("STREAMSSL_KAFKA__CLIENT_ID", "env-client")
    final = load_settings(CommonSettings, config, {"topic": "from.flag"})
    assert final.topic == "from.env"
    assert final.kafka.client_id == "env-client"
    assert final.bus == "kafka://file:9092"


def test_secrets_are_not_printed(tmp_path: Path) -> None:
    config = write(
        tmp_path,
        "kafka:\n  security_protocol: SASL_SSL\n  sasl_mechanism: PLAIN\n"
        "  sasl_plain_username: cam\n  sasl_plain_password: hunter2\n",
    )
    settings = load_settings(CommonSettings, config)
    assert "hunter2" not in repr(settings)
    assert settings.kafka.client_config()["sasl_plain_password"] == "hunter2"
    assert settings.kafka.client_config()["security_protocol"] == "SASL_SSL"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("bus: redis://x\n", "unknown bus URL"),
        ("bus: 'kafka://nohostport'\n", "expected HOST:PORT"),
        ("topic: 'bad topic!'\n", "invalid topic name"),
        ("metrics_port: 70000\n", "metrics_port"),
        ("no_such_setting: 1\n", "no_such_setting"),
        ("- a\n- list\n", "must hold a mapping"),
        ("bus: [unclosed\n", "not valid YAML"),
    ],
)
def test_bad_settings_name_the_problem(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_settings(CommonSettings, write(tmp_path, text))


def test_missing_config_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_settings(CommonSettings, tmp_path / "absent.yaml")


def test_flags_are_built_from_the_settings_fields() -> None:
    import argparse

    from ingest.runtime.flags import Flag, add_flags, given_settings
    from serving.config import ServingSettings
    from trainer.config import TrainerSettings

    trainer_flags = (Flag("max_steps", metavar="N"), Flag("data.batch_size"), Flag("device"), Flag("compile"))
    parser = argparse.ArgumentParser()
    add_flags(parser, TrainerSettings, trainer_flags)
    args = parser.parse_args(["--batch-size", "4", "--device", "cpu", "--compile"])
    assert given_settings(args, trainer_flags) == {"data": {"batch_size": 4}, "device": "cpu", "compile": True}
    with pytest.raises(SystemExit):
        parser.parse_args(["--device", "tpu"])  # choices come from the Literal

    serving_flags = (Flag("http", name="--no-http"),)
    parser = argparse.ArgumentParser()
    add_flags(parser, ServingSettings, serving_flags)
    assert given_settings(parser.parse_args([]), serving_flags) == {}
    assert given_settings(parser.parse_args(["--no-http"]), serving_flags) == {"http": False}

    with pytest.raises(KeyError, match=r"no setting 'data\.nope'"):
        add_flags(argparse.ArgumentParser(), TrainerSettings, (Flag("data.nope"),))
