"""A simulated sugar mill: a real Modbus TCP server and a real OPC UA server fed by a plant model.

It stands in for the PLCs and drives of a mill on a developer machine and in CI, so the
edge agent and everything downstream run against real protocol servers.
See ``docs/simulator.md`` for the register map, the node list and what each signal does.

    async with SimulatedPlant(seed=1) as plant:
        plant.model.hold("boiler1.drum_pressure", 12.7)
        await plant.refresh()
        ...  # read modbus on plant.modbus_port, OPC UA on plant.opcua_endpoint
"""

from simulator.edge_config import (
    DEFAULT_CONFIG_PATH,
    EDGE_TAGS,
    EdgeTag,
    render_default_edge_config,
    render_edge_config,
    write_default_edge_config,
)
from simulator.modbus_server import REGISTER_MAP, UNITS, ModbusPoint, ModbusSimServer, ModbusUnit
from simulator.opcua_server import NAMESPACE_INDEX, NAMESPACE_URI, NODE_MAP, OpcUaPoint, OpcUaSimServer
from simulator.plant import Kind, PlantModel, Signal, SimulatorError, UnknownSignalError, Value, signal_catalog
from simulator.runner import DEFAULT_MODBUS_PORT, DEFAULT_OPCUA_PORT, SimulatedPlant

__all__ = [
    "DEFAULT_CONFIG_PATH",
    "DEFAULT_MODBUS_PORT",
    "DEFAULT_OPCUA_PORT",
    "EDGE_TAGS",
    "NAMESPACE_INDEX",
    "NAMESPACE_URI",
    "NODE_MAP",
    "REGISTER_MAP",
    "UNITS",
    "EdgeTag",
    "Kind",
    "ModbusPoint",
    "ModbusSimServer",
    "ModbusUnit",
    "OpcUaPoint",
    "OpcUaSimServer",
    "PlantModel",
    "Signal",
    "SimulatedPlant",
    "SimulatorError",
    "UnknownSignalError",
    "Value",
    "render_default_edge_config",
    "render_edge_config",
    "signal_catalog",
    "write_default_edge_config",
]
