"""KafkaSettings: security options from the environment (how the Helm chart passes a Secret's
SASL/SSL credentials to the Ray actors), under the options given explicitly."""

from __future__ import annotations

import pytest

from operators.kafka.settings import ENV_OPTIONS, KafkaSettings

SECURE = {
    "STREAMVISION_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
    "STREAMVISION_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
    "STREAMVISION_KAFKA_SASL_USERNAME": "cams",
    "STREAMVISION_KAFKA_SASL_PASSWORD": "s3cret",
    "STREAMVISION_KAFKA_SSL_CAFILE": "/etc/streamvision/kafka/ca.crt",
}


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for var in ENV_OPTIONS:
        monkeypatch.delenv(var, raising=False)
    return monkeypatch


@pytest.mark.parametrize("kind", ["consumer", "producer", "admin"])
def test_every_client_takes_the_security_options_from_the_environment(clean_env, kind):
    for var, value in SECURE.items():
        clean_env.setenv(var, value)
    config = KafkaSettings("kafka:9093").client_config(kind)
    assert config == {"bootstrap_servers": ["kafka:9093"], "security_protocol": "SASL_SSL",
                      "sasl_mechanism": "SCRAM-SHA-512", "sasl_plain_username": "cams",
                      "sasl_plain_password": "s3cret", "ssl_cafile": "/etc/streamvision/kafka/ca.crt"}


def test_explicit_options_win_and_empty_variables_are_unset(clean_env):
    clean_env.setenv("STREAMVISION_KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    clean_env.setenv("STREAMVISION_KAFKA_SASL_MECHANISM", "")
    settings = KafkaSettings("kafka:9093", options={"security_protocol": "SSL"})
    assert settings.client_config("consumer") == {"bootstrap_servers": ["kafka:9093"], "security_protocol": "SSL"}


def test_the_environment_is_read_where_the_client_is_built_not_where_the_settings_were_made(clean_env):
    settings = KafkaSettings("kafka:9092")  # e.g. made by the driver, pickled to an actor
    assert settings.client_config("producer") == {"bootstrap_servers": ["kafka:9092"]}
    clean_env.setenv("STREAMVISION_KAFKA_SASL_PASSWORD", "s3cret")
    assert settings.client_config("producer")["sasl_plain_password"] == "s3cret"
