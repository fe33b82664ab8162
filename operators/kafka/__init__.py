"""Kafka: the wire format (headers + payload codec) and the client settings sources and producers share."""
