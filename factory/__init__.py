"""Cross-part contracts of the factory platform: wire format, MQTT access, config loading, CLI.

Only standard-library and edge-safe imports at this level: the edge agent imports it.
"""

__all__ = ["__version__"]

__version__ = "0.1.0"
