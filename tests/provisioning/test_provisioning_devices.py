"""Device identities: hashes Mosquitto accepts, edge bundles the agent loads, revoke and rotate."""

from __future__ import annotations

import json
import shutil
import stat
import subprocess
from pathlib import Path

import psycopg
import yaml
from click.testing import CliRunner

from edge_agent.config import HttpConfig, load_config
from provisioning.cli import device, revoke, rotate
from provisioning.devices import hash_password, verify_password


def _hash(database_url: str, site: str, name: str) -> tuple[str, bool]:
    with psycopg.connect(database_url) as conn:
        row = conn.execute(
            "SELECT password_hash, revoked_at IS NOT NULL FROM provisioning.device WHERE site = %s AND name = %s",
            (site, name),
        ).fetchone()
    assert row is not None
    return str(row[0]), bool(row[1])


def _env(database_url: str) -> dict[str, str]:
    return {"FACTORY_DATABASE_URL": database_url, "FACTORY_MQTT_URL": "mqtt://user:pw@broker.plant:1883"}


def test_hash_format_is_the_one_mosquitto_passwd_writes(tmp_path: Path) -> None:
    passwd = tmp_path / "passwd"
    tool = shutil.which("mosquitto_passwd")
    assert tool is not None, "mosquitto_passwd (Debian package mosquitto) is needed; scripts/test installs it"
    subprocess.run([tool, "-c", "-b", str(passwd), "alice", "s3cret-pw"], check=True)
    stored = passwd.read_text().strip().split(":", 1)[1]
    assert stored.startswith("$7$101$")
    assert verify_password("s3cret-pw", stored)
    assert not verify_password("wrong", stored)
    ours = hash_password("s3cret-pw")
    assert ours.split("$")[:3] == stored.split("$")[:3]  # same scheme and iteration count
    assert len(ours) == len(stored)  # same salt and digest sizes


def test_device_writes_a_bundle_the_agent_loads(database_url: str, site: str, tmp_path: Path) -> None:
    out = tmp_path / "bundle"
    result = CliRunner().invoke(device, [site, "boiler-pi", "--out", str(out), "--json"], env=_env(database_url))
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["username"] == f"{site}.boiler-pi"

    yamls = list(out.glob("*.yaml"))
    assert len(yamls) == 1
    config = load_config(yamls[0])
    assert (config.site, config.device) == (site, "boiler-pi")
    assert config.mqtt.username == f"{site}.boiler-pi"
    assert config.mqtt.url == "mqtt://broker.plant:1883"  # the operator's credentials never reach a device
    assert config.mqtt.password_file is not None
    secret = out / config.mqtt.password_file
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    target = config.mqtt.target(out)
    assert target.username == f"{site}.boiler-pi"
    stored, revoked = _hash(database_url, site, "boiler-pi")
    assert target.password is not None
    assert verify_password(target.password, stored)
    assert target.password not in stored
    assert not revoked
    raw = yaml.safe_load(yamls[0].read_text())
    assert raw["http"] == {"enabled": True, "host": "127.0.0.1", "port": 9102}  # written out, not left implicit
    assert config.http == HttpConfig()  # the agent's own default: loopback only
    assert "http://127.0.0.1:9102" in yamls[0].read_text()


def test_sources_are_copied_from_an_existing_config(database_url: str, site: str, tmp_path: Path) -> None:
    mill = Path(__file__).parents[2] / "simulator" / "mill-edge.yaml"
    args = [site, "mill-pi", "--out", str(tmp_path), "--sources", str(mill), "--mqtt-url", "mqtt://10.0.0.5:1883"]
    result = CliRunner().invoke(device, args, env=_env(database_url))
    assert result.exit_code == 0, result.output
    config = load_config(tmp_path / "mill-pi.yaml")
    assert [s.name for s in config.sources] == [s.name for s in load_config(mill).sources]
    assert config.mqtt.url == "mqtt://10.0.0.5:1883"


def test_register_twice_fails_rotate_changes_revoke_marks(
    database_url: str, mqtt_url: str, site: str, tmp_path: Path
) -> None:
    runner, env = CliRunner(), _env(database_url)
    assert runner.invoke(device, [site, "pi", "--out", str(tmp_path / "a")], env=env).exit_code == 0
    again = runner.invoke(device, [site, "pi", "--out", str(tmp_path / "b")], env=env)
    assert again.exit_code == 2
    assert "already registered" in again.output
    first, _ = _hash(database_url, site, "pi")

    assert runner.invoke(rotate, [site, "pi", "--out", str(tmp_path / "c")], env=env).exit_code == 0
    second, _ = _hash(database_url, site, "pi")
    new_password = (tmp_path / "c" / "pi.secret").read_text().strip()
    assert second != first
    assert verify_password(new_password, second)

    assert runner.invoke(revoke, [site, "pi", "--mqtt-url", mqtt_url], env=env).exit_code == 0  # clears its status
    assert _hash(database_url, site, "pi")[1] is True
    refused = runner.invoke(rotate, [site, "pi", "--out", str(tmp_path / "d")], env=env)
    assert refused.exit_code == 2
    assert "revoked" in refused.output
    # registering a revoked device again re-activates it with a fresh password
    assert runner.invoke(device, [site, "pi", "--out", str(tmp_path / "e")], env=env).exit_code == 0
    assert _hash(database_url, site, "pi")[1] is False


def test_bad_names_and_unknown_devices_are_refused(database_url: str, site: str, tmp_path: Path) -> None:
    runner, env = CliRunner(), _env(database_url)
    bad = runner.invoke(device, [site, "Bad.Name", "--out", str(tmp_path)], env=env)
    assert bad.exit_code == 2
    assert "must match" in bad.output
    missing = runner.invoke(revoke, [site, "nobody"], env=env)
    assert missing.exit_code == 2
    assert "not registered" in missing.output
