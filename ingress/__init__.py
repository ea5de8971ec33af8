"""The HTTP ingress: POST /v1/uplink → Kafka, 200 only once the broker has the push."""

from ingress.app import create_app

__all__ = ["create_app"]
