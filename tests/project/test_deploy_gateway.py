"""The compose file's network exposure: only the gateway (HTTP) and Mosquitto (MQTT) publish
ports; the ERP and Grafana are reached through the gateway, which is set up to find them."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml
from click.testing import CliRunner

from provisioning.cli import gateway
from provisioning.gateway import GatewayOptions

COMPOSE = Path(__file__).resolve().parents[2] / "deploy" / "docker-compose.yml"


def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def _container_ports(service: dict[str, Any]) -> set[int]:
    """The container side of each published port ("HOST:CONTAINER", "CONTAINER", or the long form)."""
    ports = set()
    for entry in service.get("ports", []):
        target = entry["target"] if isinstance(entry, dict) else str(entry).split(":")[-1].split("/")[0]
        ports.add(int(target))
    return ports


def test_only_the_gateway_and_the_broker_publish_ports() -> None:
    services = compose()["services"]
    published = {name for name, service in services.items() if service.get("ports")}
    assert published == {"gateway", "mosquitto"}
    assert _container_ports(services["gateway"]) == {80, 443}
    assert _container_ports(services["mosquitto"]) == {1884, 8883}  # devices' MQTT, plain and TLS
    for name in ("erp", "grafana"):
        assert "ports" not in services[name], name
        assert services[name].get("network_mode") != "host", name


def test_the_gateway_finds_the_erp_and_grafana_and_the_erp_trusts_only_it() -> None:
    spec = compose()
    services = spec["services"]
    defaults = GatewayOptions()
    assert defaults.erp.host in services
    assert defaults.grafana is not None
    assert defaults.grafana.host in services
    erp = services["erp"]["command"]
    assert erp[erp.index("--port") + 1] == str(defaults.erp.port)
    gateway_address = services["gateway"]["networks"]["default"]["ipv4_address"]
    assert erp[erp.index("--forwarded-allow-ips") + 1] == gateway_address
    subnet = spec["networks"]["default"]["ipam"]["config"][0]["subnet"]
    assert gateway_address.rsplit(".", 1)[0] == subnet.split("/")[0].rsplit(".", 1)[0]
    grafana = services["grafana"]["environment"]
    assert grafana["GF_SERVER_SERVE_FROM_SUB_PATH"] == "true"
    assert grafana["GF_SERVER_ROOT_URL"].endswith("/grafana/")


def test_the_gateway_gets_its_config_and_tls_but_not_the_ca() -> None:
    service = compose()["services"]["gateway"]
    mounts = {volume.split(":")[1]: volume.split(":")[0] for volume in service["volumes"]}
    command = service["command"]
    conf = command[command.index("-c") + 1]
    assert mounts[conf] == "./gateway/nginx.conf"
    assert mounts[conf.rsplit("/", 1)[0] + "/tls"] == "./gateway/tls"
    assert not any("ca" in source.split("/") for source in mounts.values())
    assert all(volume.endswith(":ro") for volume in service["volumes"])


def test_the_documented_provisioning_step_parses_and_matches_the_mounts(tmp_path: Path) -> None:
    """Step 4 of the compose file's header, run for real into a temporary folder."""
    text = COMPOSE.read_text()
    step = re.search(r"factory provision gateway (.+?)\n#\s+(--.+?)\n", text)
    assert step is not None
    args = (step[1].rstrip(" \\") + " " + step[2]).split()
    out = args[args.index("--out") + 1]
    assert out in yaml.safe_dump(compose()["services"]["tools"]["volumes"])
    args[args.index("--out") + 1] = str(tmp_path)
    result = CliRunner().invoke(gateway, args)
    assert result.exit_code == 0, result.output
    conf = (tmp_path / "nginx.conf").read_text()
    assert "user nginx;" in conf
    assert "access_log /dev/stdout factory;" in conf
    assert "ssl_handshake_timeout 10s;" in conf  # the image's nginx (1.27) has it; Debian 12's (1.22) not
    image = re.fullmatch(r"nginx:(\d+)\.(\d+)(?:\.(\d+))?-alpine", compose()["services"]["gateway"]["image"])
    assert image is not None
    assert tuple(int(part or 0) for part in image.groups()) >= (1, 25, 5)
    assert (tmp_path / "tls" / "server.key").is_file()
