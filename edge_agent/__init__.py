"""The edge agent: reads Modbus and OPC UA equipment and publishes telemetry over MQTT.

Runs on a Raspberry Pi: nothing here may import the cloud side (numpy, scikit-learn,
fastapi, psycopg).
"""

from edge_agent.agent import EdgeAgent
from edge_agent.config import EdgeConfig, load_config
from edge_agent.errors import EdgeError, SourceError

__all__ = ["EdgeAgent", "EdgeConfig", "EdgeError", "SourceError", "load_config"]
