"""Ingest: subscribes to device telemetry and writes it into the telemetry schema."""

from ingest.service import IngestConfig, IngestService, IngestStats
from ingest.store import TelemetryStore

__all__ = ["IngestConfig", "IngestService", "IngestStats", "TelemetryStore"]
