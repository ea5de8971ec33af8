"""A real Kafka broker wherever uplink runs: configured, testcontainers, or local from jars."""

from uplink.broker.local import KAFKA_VERSION, BrokerSettings, LocalBroker, fetch_jars
from uplink.broker.resolve import free_port, kafka_broker

__all__ = [
    "KAFKA_VERSION",
    "BrokerSettings",
    "LocalBroker",
    "fetch_jars",
    "free_port",
    "kafka_broker",
]
