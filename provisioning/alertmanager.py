"""Alertmanager's configuration from the plant's alert settings file.

Who is told what (receivers by severity), how (e-mail through the plant's mail server,
webhooks) and how often. The settings file holds the secrets (the mail password, webhook
URLs, which often carry a token): it is written by a person, read here, and never passed on
the command line. The configuration written from it holds them too, so it is mode 0600.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Final

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from factory.configfile import Loc, load_yaml_model
from provisioning.alert_rules import SEVERITIES, Severity

__all__ = ["AlertSettings", "Receiver", "Smtp", "Timing", "load_alert_settings", "render_alertmanager"]

DURATION: Final = r"^[1-9][0-9]*(s|m|h|d)$"
EMAIL: Final = r"^[^@\s,<>\"]+@[^@\s,<>\"]+$"
# Labels alerts are grouped by: one notification per rule and site (and asset, for Grafana's asset alerts).
GROUP_BY: Final = ["alertname", "site", "asset"]
# Labels that make two alerts of one rule "the same": a critical one silences its warning.
SAME_ALERT: Final = ["alertname", "site", "device", "asset", "line", "source", "instance", "analytics_job"]
UNROUTED: Final = "unrouted"
# Passwords copied from an example and never changed: refused (the mail server would refuse them later, silently).
PLACEHOLDERS: Final = frozenset({"", "...", "changeme", "change-me", "change_me", "secret", "password", "xxx", "todo"})
SUBJECT: Final = (
    "[{{ .Status | toUpper }}] {{ .CommonLabels.severity }}: {{ .CommonLabels.alertname }}"
    "{{ with .CommonLabels.site }} at {{ . }}{{ end }}{{ with .CommonLabels.asset }} ({{ . }}){{ end }}"
)


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class Smtp(Strict):
    """The plant's mail server; STARTTLS unless ``require_tls: false`` (a relay on the same host)."""

    smarthost: str = Field(pattern=r"^[A-Za-z0-9.-]+:[0-9]{1,5}$", description="HOST:PORT")
    from_: str = Field(alias="from", pattern=EMAIL)
    username: str | None = None
    password: SecretStr | None = None
    require_tls: bool = True
    hello: str = Field("localhost", pattern=r"^[A-Za-z0-9.-]+$", description="the name said in EHLO")

    @field_validator("password")
    @classmethod
    def _real(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and value.get_secret_value().strip().lower() in PLACEHOLDERS:
            raise ValueError("a placeholder: give the mail account's password")
        return value


class Receiver(Strict):
    """People or systems told about alerts of the given severities."""

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")
    severities: list[Severity] = Field(min_length=1)
    email: list[str] = []
    webhooks: list[SecretStr] = []

    @field_validator("email")
    @classmethod
    def _addresses(cls, value: list[str]) -> list[str]:
        bad = [a for a in value if not re.match(EMAIL, a)]
        if bad:
            raise ValueError(f"not an e-mail address: {bad[0]!r}")
        return value

    @field_validator("webhooks")
    @classmethod
    def _urls(cls, value: list[SecretStr]) -> list[SecretStr]:
        if any(not u.get_secret_value().startswith(("http://", "https://")) for u in value):
            raise ValueError("a webhook is an http:// or https:// URL")  # the URL itself is not repeated: a secret
        return value


class Timing(Strict):
    """How long Alertmanager waits before the first notification of a group (more alerts may
    join it), between notifications of a changed group, and before repeating an unchanged one."""

    group_wait: str = Field("30s", pattern=DURATION)
    group_interval: str = Field("5m", pattern=DURATION)
    repeat_interval: str = Field("4h", pattern=DURATION)  # warnings: once a shift is reminder enough
    critical_repeat_interval: str = Field("1h", pattern=DURATION)
    resolve_timeout: str = Field("5m", pattern=DURATION)


class AlertSettings(Strict):
    smtp: Smtp | None = None
    receivers: list[Receiver] = Field(min_length=1)
    timing: Timing = Timing()


def _checks(data: Any) -> list[tuple[Loc, str]]:
    """Problems across sections, with the place a person fixes them."""
    if not isinstance(data, dict) or not isinstance(data.get("receivers"), list):
        return []
    problems: list[tuple[Loc, str]] = []
    names: set[str] = set()
    covered: set[str] = set()
    for i, receiver in enumerate(data["receivers"]):
        if not isinstance(receiver, dict):
            continue
        if receiver.get("name") in names:
            problems.append((("receivers", i, "name"), f"receiver {receiver['name']!r} is named twice"))
        names.add(str(receiver.get("name")))
        if not receiver.get("email") and not receiver.get("webhooks"):
            problems.append((("receivers", i), "give `email` addresses, `webhooks` or both"))
        if receiver.get("email") and not data.get("smtp"):
            problems.append((("receivers", i, "email"), "e-mail needs an `smtp` section (the mail server)"))
        severities = receiver.get("severities")
        covered |= set(severities) if isinstance(severities, list) else set()
    if missing := [s for s in SEVERITIES if s not in covered]:
        problems.append((("receivers",), f"no receiver takes {' or '.join(missing)} alerts"))
    return problems


def load_alert_settings(path: Path) -> AlertSettings:
    """The settings file, or ``ConfigError`` naming the file, line and key of every problem."""
    return load_yaml_model(path, AlertSettings, _checks)


def _receiver(receiver: Receiver) -> dict[str, Any]:
    out: dict[str, Any] = {"name": receiver.name}
    if receiver.email:
        out["email_configs"] = [
            {"to": ", ".join(receiver.email), "send_resolved": True, "headers": {"Subject": SUBJECT}}
        ]
    if receiver.webhooks:
        out["webhook_configs"] = [
            {"url": url.get_secret_value(), "send_resolved": True, "max_alerts": 0} for url in receiver.webhooks
        ]
    return out


def _global(settings: AlertSettings) -> dict[str, Any]:
    out: dict[str, Any] = {"resolve_timeout": settings.timing.resolve_timeout}
    if (smtp := settings.smtp) is not None:
        out |= {
            "smtp_smarthost": smtp.smarthost,
            "smtp_from": smtp.from_,
            "smtp_hello": smtp.hello,
            "smtp_require_tls": smtp.require_tls,
        }
        if smtp.username is not None:
            out["smtp_auth_username"] = smtp.username
        if smtp.password is not None:
            out["smtp_auth_password"] = smtp.password.get_secret_value()
    return out


def _inhibitions() -> list[dict[str, Any]]:
    offline = ['alertname!="EdgeSiteOffline"', 'alertname!="EdgeDeviceOffline"']
    return [
        # A site that is cut off explains every other alert about it (its devices, its assets, stale data).
        {"source_matchers": ['alertname="EdgeSiteOffline"'], "target_matchers": [offline[0]], "equal": ["site"]},
        # So does an offline device for its own alerts and the alerts of the assets it reads
        # (not the bridge's DeviceOffline about the same device: that one has told people already).
        {"source_matchers": ['alertname="EdgeDeviceOffline"'],
         "target_matchers": [*offline, 'alertname!="DeviceOffline"'], "equal": ["site", "device"]},
        # The bridge's alerts come from the event itself, at once; Prometheus' and Grafana's rules
        # about the same fact come minutes later and would tell people a second time.
        {"source_matchers": ['alertname="DeviceOffline"'], "target_matchers": ['alertname="EdgeDeviceOffline"'],
         "equal": ["site", "device"]},
        {"source_matchers": ['alertname="AnomalyEpisode"'], "target_matchers": ['alertname="AnomalyEpisodeOpen"'],
         "equal": ["site", "asset"]},
        {"source_matchers": ['alertname="AssetAtRisk"'], "target_matchers": ['alertname="FailureProbabilityHigh"'],
         "equal": ["asset"]},
        # The critical alert of a rule says all its warning would.
        {"source_matchers": ['severity="critical"'], "target_matchers": ['severity="warning"'], "equal": SAME_ALERT},
    ]  # fmt: skip


def render_alertmanager(settings: AlertSettings) -> dict[str, Any]:
    """alertmanager.yml: a route per receiver and severity (each alert goes to every receiver
    of its severity), grouping by rule and site, and the inhibitions above."""
    timing = settings.timing
    routes = []
    for severity in SEVERITIES:
        for receiver in settings.receivers:
            if severity in receiver.severities:
                route: dict[str, Any] = {
                    "receiver": receiver.name,
                    "matchers": [f'severity="{severity}"'],
                    "continue": True,
                }
                if severity == "critical":
                    route["repeat_interval"] = timing.critical_repeat_interval
                routes.append(route)
    return {
        "global": _global(settings),
        "route": {
            "receiver": UNROUTED,
            "group_by": GROUP_BY,
            "group_wait": timing.group_wait,
            "group_interval": timing.group_interval,
            "repeat_interval": timing.repeat_interval,
            "routes": routes,
        },
        "inhibit_rules": _inhibitions(),
        # Alerts of a severity no receiver takes end here: no one is told (the settings check
        # that critical and warning each have a receiver).
        "receivers": [{"name": UNROUTED}, *(_receiver(r) for r in settings.receivers)],
    }
