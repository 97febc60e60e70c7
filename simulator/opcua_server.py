"""The simulated mill's OPC UA side: a real asyncua server fed by the plant model.

The centrifugal station and the turbine are OPC UA equipment, as they often are in a real
mill. Variables have string NodeIds (``ns=2;s=Centrifugal1.VibrationRMS``) so that an
edge config can name them without browsing. ``NODE_MAP`` is the single source of them.

The namespace index is not chosen by the server but by the order of registration: 0 is
OPC UA's own, 1 the server's application URI, so the first namespace registered is 2. The
server checks this at start, because the shipped edge config relies on it.

asyncua's built-in clock task sleeps a whole second and only looks at its stop flag after
waking, which makes every shutdown take a second; the clock is disabled and this server
writes ``Server_ServerStatus_CurrentTime`` itself on each refresh instead.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC

from asyncua import ua
from asyncua.common.node import Node
from asyncua.server.server import Server
from asyncua.ua.attribute_ids import AttributeIds
from asyncua.ua.object_ids import ObjectIds

from simulator.plant import PlantModel, SimulatorError, Value, signal_catalog

logger = logging.getLogger(__name__)

NAMESPACE_URI = "urn:factory:sugar-mill"
NAMESPACE_INDEX = 2
APPLICATION_URI = "urn:factory:sugar-mill:simulator"
_UINT32_MAX = (1 << 32) - 1
_CURRENT_TIME = ua.NodeId.from_string(f"i={ObjectIds.Server_ServerStatus_CurrentTime}")


@dataclass(frozen=True)
class OpcUaPoint:
    """One plant signal as an OPC UA variable ``<Object>.<Variable>`` in our namespace."""

    path: str
    signal: str
    variant: ua.VariantType

    @property
    def node_id(self) -> str:
        """The NodeId as an edge config writes it."""
        return f"ns={NAMESPACE_INDEX};s={self.path}"

    @property
    def object_name(self) -> str:
        return self.path.split(".", 1)[0]

    @property
    def browse_name(self) -> str:
        return self.path.split(".", 1)[1]

    def encode(self, value: Value) -> float | int | bool:
        """The Python value stored in the variable, in the variant's range."""
        if self.variant is ua.VariantType.Boolean:
            return bool(value)
        if self.variant is ua.VariantType.UInt32:
            return min(max(int(value), 0), _UINT32_MAX)
        if self.variant is ua.VariantType.Int32:
            return min(max(int(value), -(1 << 31)), (1 << 31) - 1)
        return float(value)


_D, _U, _B = ua.VariantType.Double, ua.VariantType.UInt32, ua.VariantType.Boolean

NODE_MAP: tuple[OpcUaPoint, ...] = (
    OpcUaPoint("Centrifugal1.VibrationRMS", "centrifugal1.vibration_rms", _D),
    OpcUaPoint("Centrifugal1.BearingTemperature", "centrifugal1.bearing_temp", _D),
    OpcUaPoint("Centrifugal1.BatchCount", "centrifugal1.batch_count", _U),
    OpcUaPoint("Centrifugal1.Spinning", "centrifugal1.spinning", _B),
    OpcUaPoint("Centrifugal2.VibrationRMS", "centrifugal2.vibration_rms", _D),
    OpcUaPoint("Centrifugal2.BearingTemperature", "centrifugal2.bearing_temp", _D),
    OpcUaPoint("Centrifugal2.BatchCount", "centrifugal2.batch_count", _U),
    OpcUaPoint("Centrifugal2.Spinning", "centrifugal2.spinning", _B),
    OpcUaPoint("Turbine1.Speed", "turbine1.speed", _D),
    OpcUaPoint("Turbine1.Power", "turbine1.power", _D),
)


_NODE_IDS = {point.path: ua.NodeId.from_string(point.node_id) for point in NODE_MAP}


class OpcUaSimServer:
    """An asyncua server (security None, anonymous) whose variables mirror the plant model."""

    def __init__(self, model: PlantModel, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self._model = model
        self._host = host
        self._requested_port = port
        self._server: Server | None = None
        self._port: int | None = None

    @property
    def port(self) -> int:
        if self._port is None:
            raise SimulatorError("the OPC UA server is not running")
        return self._port

    @property
    def endpoint(self) -> str:
        return f"opc.tcp://{self._host}:{self.port}"

    async def start(self) -> None:
        """Build the address space and listen; port 0 binds a free port.

        With port 0 the endpoints are described with port 0, but asyncua rewrites each
        endpoint URL to the address the client used, so discovery still works.
        """
        server = Server()
        await server.init()
        server.disable_clock(val=True)
        server.set_endpoint(f"opc.tcp://{self._host}:{self._requested_port}")
        server.set_server_name("Factory simulated sugar mill")
        await server.set_application_uri(APPLICATION_URI)
        server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
        server.set_identity_tokens([ua.AnonymousIdentityToken])
        index = await server.register_namespace(NAMESPACE_URI)
        if index != NAMESPACE_INDEX:
            raise SimulatorError(f"{NAMESPACE_URI} got namespace index {index}, not {NAMESPACE_INDEX}")
        await self._add_nodes(server)
        try:
            await server.start()
        except OSError as exc:
            raise SimulatorError(f"cannot listen on {self._host}:{self._requested_port}: {exc}") from exc
        if server.bserver is None:  # pragma: no cover - start() sets it or raises
            raise SimulatorError("asyncua did not start its binary server")
        self._server, self._port = server, server.bserver.port
        logger.info("OPC UA server listening on %s", self.endpoint)
        await self.refresh()

    async def _add_nodes(self, server: Server) -> None:
        catalog = signal_catalog()
        objects: dict[str, Node] = {}
        for point in NODE_MAP:
            name = point.object_name
            if name not in objects:
                objects[name] = await server.nodes.objects.add_object(
                    ua.NodeId.from_string(f"ns={NAMESPACE_INDEX};s={name}"), ua.QualifiedName(name, NAMESPACE_INDEX)
                )
            signal = catalog[point.signal]
            node = await objects[name].add_variable(
                _NODE_IDS[point.path],
                ua.QualifiedName(point.browse_name, NAMESPACE_INDEX),
                ua.Variant(point.encode(signal.initial), point.variant),
            )
            text = f"{signal.description} [{signal.unit}]" if signal.unit else signal.description
            await node.write_attribute(AttributeIds.Description, ua.DataValue(ua.Variant(ua.LocalizedText(text))))

    async def refresh(self) -> None:
        """Write the model's current values, stamped now, to every variable."""
        if self._server is None:
            return
        now = ua.DateTime.now(UTC)
        values = self._model.snapshot()
        for point in NODE_MAP:
            variant = ua.Variant(point.encode(values[point.signal]), point.variant)
            value = ua.DataValue(variant, SourceTimestamp=now, ServerTimestamp=now)
            await self._server.write_attribute_value(_NODE_IDS[point.path], value)
        clock = ua.DataValue(ua.Variant(now, ua.VariantType.DateTime), SourceTimestamp=now, ServerTimestamp=now)
        await self._server.write_attribute_value(_CURRENT_TIME, clock)

    async def stop(self) -> None:
        """Close client sessions and the listener."""
        if self._server is not None:
            await stop_server(self._server)
            logger.info("OPC UA server %s stopped", self.endpoint)
        self._server, self._port = None, None


async def stop_server(server: Server) -> None:
    """``server.stop()``, and the sessions it leaves open: a session with subscriptions
    outlives its connection (OPC UA Part 4, 6.7) until its timeout, with tasks of its own
    still running after the server stopped."""
    await server.stop()
    left = server.iserver._external_sessions  # noqa: SLF001 - asyncua keeps them only here
    for session in list(left.values()):
        await session.close_session(delete_subs=True)
    left.clear()
