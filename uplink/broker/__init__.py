"""A real Kafka broker wherever uplink runs: configured, testcontainers, or local from jars."""

from uplink.broker.local import KAFKA_VERSION, BrokerSettings, LocalBroker, fetch_jars, free_port
from uplink.broker.resolve import kafka_broker

__all__ = [
    "KAFKA_VERSION",
    "BrokerSettings",
    "LocalBroker",
    "fetch_jars",
    "free_port",
    "kafka_broker",
]
