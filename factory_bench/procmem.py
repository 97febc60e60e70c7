"""What a process holds in memory, from /proc, and the budgets the deploy files give a service.

The figures are the kernel's: ``VmRSS`` (resident now) and ``VmHWM`` (the most it was
resident at once, since the process started), in /proc/<pid>/status. A service's figure
is its process and every process below it, summed. The budgets are read from the files
a deployment runs with (compose ``mem_limit``, systemd ``MemoryMax=``), never copied.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import yaml

__all__ = [
    "DEPLOY",
    "Budget",
    "budgets",
    "compose_limits",
    "hwm_mib",
    "parse_compose_size",
    "parse_systemd_size",
    "process_tree",
    "rss_mib",
    "status_kib",
    "systemd_limit",
]

DEPLOY: Final = Path(__file__).resolve().parent.parent / "deploy"
_COMPOSE_SIZE: Final = re.compile(r"(\d+(?:\.\d+)?)\s*([bkmg]?)b?", re.IGNORECASE)
_SYSTEMD_SIZE: Final = re.compile(r"(\d+(?:\.\d+)?)([KMGT]?)")
_POWER: Final = {"": 0, "b": 0, "k": 1, "m": 2, "g": 3, "t": 4}


def status_kib(pid: int, field: str) -> int:
    """One ``Vm...`` line of /proc/<pid>/status, in KiB (a process that is gone raises OSError)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise LookupError(f"no {field} for process {pid}")


def process_tree(pid: int) -> list[int]:
    """``pid`` and every live process below it (from each thread's ``children`` list)."""
    found, queue = [], [pid]
    while queue:
        current = queue.pop()
        found.append(current)
        try:
            tasks = list(Path(f"/proc/{current}/task").iterdir())
        except OSError:
            continue
        for task in tasks:
            try:
                queue += [int(child) for child in (task / "children").read_text().split()]
            except OSError:
                continue
    return found


def _sum_mib(pid: int, field: str) -> float:
    total = 0
    for member in process_tree(pid):
        try:
            total += status_kib(member, field)
        except OSError:  # ended between the listing and the read
            continue
    return total / 1024


def rss_mib(pid: int) -> float:
    """Resident now: the process and its children."""
    return _sum_mib(pid, "VmRSS")


def hwm_mib(pid: int) -> float:
    """The kernel's peak resident size of the process and of each child, summed."""
    return _sum_mib(pid, "VmHWM")


def parse_compose_size(text: str | int) -> float:
    """Compose's ``mem_limit`` (``512m``, ``1g``, ``1073741824``, ``1gb``) in MiB."""
    match = _COMPOSE_SIZE.fullmatch(str(text).strip())
    if match is None:
        raise ValueError(f"not a compose memory size: {text!r}")
    number, unit = float(match.group(1)), match.group(2).lower()
    return number * 2.0 ** (10 * _POWER[unit] - 20)


def parse_systemd_size(text: str) -> float | None:
    """systemd's ``MemoryMax=`` (``150M``, ``1G``, bytes) in MiB; None for ``infinity``.

    A percentage of the machine's memory is refused: it is no figure to compare with."""
    text = text.strip()
    if text == "infinity":
        return None
    match = _SYSTEMD_SIZE.fullmatch(text)
    if match is None:
        raise ValueError(f"not a systemd memory size: {text!r}")
    return float(match.group(1)) * 2.0 ** (10 * _POWER[match.group(2).lower()] - 20)


def compose_limits(compose_file: Path) -> dict[str, float]:
    """Every compose service's ``mem_limit`` in MiB (services without one are left out)."""
    services = yaml.safe_load(compose_file.read_text())["services"]
    return {name: parse_compose_size(s["mem_limit"]) for name, s in services.items() if "mem_limit" in s}


def systemd_limit(unit_file: Path) -> float | None:
    """The unit's last ``MemoryMax=`` in MiB (systemd takes the last), None without one."""
    values = re.findall(r"^\s*MemoryMax=(.*)$", unit_file.read_text(), re.MULTILINE)
    return parse_systemd_size(values[-1]) if values else None


@dataclass(frozen=True, slots=True)
class Budget:
    """A service's memory budgets, in MiB; None where the deployment has no such limit."""

    compose_mib: float | None
    systemd_mib: float | None
    compose_service: str | None
    systemd_unit: str | None


def budgets(deploy: Path, services: dict[str, tuple[str | None, str | None]]) -> dict[str, Budget]:
    """``services``: name -> (compose service, systemd unit file name), either None where the
    deployment does not run it that way. A named service or unit that is missing is an error."""
    limits = compose_limits(deploy / "docker-compose.yml")
    out: dict[str, Budget] = {}
    for name, (service, unit) in services.items():
        if service is not None and service not in limits:
            raise LookupError(f"{deploy / 'docker-compose.yml'}: no mem_limit for service {service!r}")
        compose = limits[service] if service is not None else None
        systemd = systemd_limit(deploy / "systemd" / unit) if unit is not None else None
        out[name] = Budget(compose, systemd, service, unit)
    return out
