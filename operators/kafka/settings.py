"""Connection settings shared by the Kafka producer, source and admin calls.

Any Kafka works: give bootstrap servers and, where the cluster needs them, security
settings (``security_protocol``, ``sasl_*``, ``ssl_*``), which are passed through to
kafka-python unchanged. Unknown option names are refused up front with a
:class:`ConfigError` instead of failing inside kafka-python.

>>> KafkaSettings("127.0.0.1:9092", options={"security_protocol": "SSL"}).client_config()
{'bootstrap_servers': ['127.0.0.1:9092'], 'security_protocol': 'SSL'}
"""

from __future__ import annotations

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
        """kafka-python keyword arguments for a ``"consumer"``, ``"producer"`` or ``"admin"`` client."""
        if kind == "admin":
            allowed = _CLIENT_KEYS
        elif kind in ("consumer", "producer"):
            allowed = _known(kind)
        else:
            raise ValueError(f"unknown client kind {kind!r}")
        return {"bootstrap_servers": self.servers(), **{k: v for k, v in self.options.items() if k in allowed}}


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
