"""Connection settings shared by the Kafka producer, source and admin calls.

Any Kafka works: give bootstrap servers and, where the cluster needs them, security
settings (``security_protocol``, ``sasl_*``, ``ssl_*``), which are passed through to
kafka-python unchanged. Unknown option names are refused up front with a
:class:`ConfigError` instead of failing inside kafka-python.

Security settings can also come from the environment of the process that builds the client
(:data:`ENV_OPTIONS`: ``STREAMVISION_KAFKA_SECURITY_PROTOCOL``, ``..._SASL_MECHANISM``,
``..._SASL_USERNAME``, ``..._SASL_PASSWORD``, ``..._SSL_CAFILE``), so that a password held in a
Kubernetes Secret reaches the Ray actors without being written into a pipeline file. Options
given explicitly win over the environment.

>>> KafkaSettings("127.0.0.1:9092", options={"security_protocol": "SSL"}).client_config()
{'bootstrap_servers': ['127.0.0.1:9092'], 'security_protocol': 'SSL'}
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any

from streamvision.core.errors import ConfigError

#: Options that kafka-python's clients share (connection and security).
_CLIENT_KEYS = frozenset({
    "client_id", "request_timeout_ms", "connections_max_idle_ms", "reconnect_backoff_ms",
    "reconnect_backoff_max_ms", "retry_backoff_ms", "metadata_max_age_ms", "api_version",
    "security_protocol", "sasl_mechanism", "sasl_plain_username", "sasl_plain_password",
    "sasl_kerberos_service_name", "sasl_kerberos_domain_name", "sasl_kerberos_name",
    "sasl_oauth_token_provider", "ssl_context", "ssl_check_hostname", "ssl_cafile", "ssl_certfile",
    "ssl_keyfile", "ssl_password", "ssl_crlfile", "ssl_ciphers", "socks5_proxy",
    "receive_buffer_bytes", "send_buffer_bytes",
})


#: Environment variables read by :meth:`KafkaSettings.client_config`, and the option each sets.
ENV_OPTIONS = {
    "STREAMVISION_KAFKA_SECURITY_PROTOCOL": "security_protocol",
    "STREAMVISION_KAFKA_SASL_MECHANISM": "sasl_mechanism",
    "STREAMVISION_KAFKA_SASL_USERNAME": "sasl_plain_username",
    "STREAMVISION_KAFKA_SASL_PASSWORD": "sasl_plain_password",
    "STREAMVISION_KAFKA_SSL_CAFILE": "ssl_cafile",
}


def env_options() -> dict[str, str]:
    """The security options set in this process's environment (empty variables are unset)."""
    return {option: os.environ[var] for var, option in ENV_OPTIONS.items() if os.environ.get(var)}


def _known(kind: str) -> frozenset[str]:
    from kafka import KafkaConsumer, KafkaProducer

    config = KafkaConsumer.DEFAULT_CONFIG if kind == "consumer" else KafkaProducer.DEFAULT_CONFIG
    return frozenset(config)


@dataclass(frozen=True)
class KafkaSettings:
    """Where the brokers are and how to talk to them.

    Args:
        bootstrap_servers: ``host:port[,host:port...]`` (or a list).
        options: kafka-python options passed through, e.g. ``security_protocol="SASL_SSL"``,
            ``sasl_mechanism="PLAIN"``, ``sasl_plain_username=...``, ``ssl_cafile=...``.
    """

    bootstrap_servers: str | list[str]
    options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.servers():
            raise ConfigError("bootstrap_servers is empty")
        unknown = sorted(set(self.options) - _known("consumer") - _known("producer"))
        if unknown:
            raise ConfigError(f"unknown Kafka client option(s) {unknown}")

    def servers(self) -> list[str]:
        """The bootstrap servers as a list."""
        if isinstance(self.bootstrap_servers, str):
            return [s.strip() for s in self.bootstrap_servers.split(",") if s.strip()]
        return list(self.bootstrap_servers)

    def client_config(self, kind: str = "admin") -> dict[str, Any]:
        """kafka-python keyword arguments for a ``"consumer"``, ``"producer"`` or ``"admin"`` client:
        ``options`` over the security options of this process's environment (:func:`env_options`)."""
        if kind == "admin":
            allowed = _CLIENT_KEYS
        elif kind in ("consumer", "producer"):
            allowed = _known(kind)
        else:
            raise ValueError(f"unknown client kind {kind!r}")
        options = {**env_options(), **self.options}
        return {"bootstrap_servers": self.servers(), **{k: v for k, v in options.items() if k in allowed}}


def ensure_topic(settings: KafkaSettings, topic: str, partitions: int = 1, timeout_s: float = 30.0) -> int:
    """Create ``topic`` with ``partitions`` partitions unless it exists; return its partition count.

    Raises:
        ConfigError: the topic name is empty or ``partitions`` < 1.
        TimeoutError: its partitions did not become visible within ``timeout_s``.
    """
    from kafka import KafkaAdminClient, KafkaConsumer
    from kafka.admin import NewTopic
    from kafka.errors import TopicAlreadyExistsError

    if not topic:
        raise ConfigError("the topic name is empty")
    if partitions < 1:
        raise ConfigError(f"partitions must be >= 1, got {partitions}")
    admin = KafkaAdminClient(**settings.client_config("admin"))
    try:
        if topic not in admin.list_topics():
            try:
                admin.create_topics([NewTopic(topic, partitions, 1)])
            except TopicAlreadyExistsError:
                pass
    finally:
        admin.close()
    probe = KafkaConsumer(**settings.client_config("consumer"))
    try:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            found = probe.partitions_for_topic(topic)
            if found:
                return len(found)
            time.sleep(0.1)
    finally:
        probe.close()
    raise TimeoutError(f"topic {topic!r} did not appear within {timeout_s:.0f} s")
