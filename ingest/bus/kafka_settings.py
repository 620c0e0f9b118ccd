"""Client settings for Apache Kafka, including security, passed through to kafka-python unchanged in meaning."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr


class KafkaSettings(BaseModel):
    """How StreamSSL's Kafka clients connect. Every field maps to the kafka-python option of the same name.

    ``extra`` is handed verbatim to every client (producer, consumer, admin) for options not modelled here, so a
    deployment can change security or tuning settings without a code change.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    client_id: str = "streamssl"
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER", "GSSAPI"] | None = None
    sasl_plain_username: str | None = None
    sasl_plain_password: SecretStr | None = None
    ssl_cafile: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    ssl_check_hostname: bool = True
    # A broker that takes longer than this for one request is treated as unavailable.
    request_timeout_s: float = Field(default=30.0, gt=0)
    extra: dict[str, Any] = Field(default_factory=dict)

    def client_config(self) -> dict[str, Any]:
        """Keyword arguments common to kafka-python's producer, consumer and admin client."""
        config: dict[str, Any] = {
            "client_id": self.client_id,
            "security_protocol": self.security_protocol,
            "request_timeout_ms": int(self.request_timeout_s * 1000),
        }
        if self.sasl_mechanism is not None:
            config["sasl_mechanism"] = self.sasl_mechanism
        if self.sasl_plain_username is not None:
            config["sasl_plain_username"] = self.sasl_plain_username
        if self.sasl_plain_password is not None:
            config["sasl_plain_password"] = self.sasl_plain_password.get_secret_value()
        if self.security_protocol in ("SSL", "SASL_SSL"):
            config["ssl_check_hostname"] = self.ssl_check_hostname
            for name in ("ssl_cafile", "ssl_certfile", "ssl_keyfile"):
                value = getattr(self, name)
                if value is not None:
                    config[name] = value
        config.update(self.extra)
        return config
