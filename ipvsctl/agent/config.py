"""The agent's configuration: built-in defaults < config file (--config) < environment < flags.

The config file is YAML with the flags' long names as keys, without the dashes::

    manifests: [/etc/ipvsctl/manifests]
    min-sync-period: 1s
    sync-period: 30s
    drain-timeout: 60s
    metrics-address: 127.0.0.1:9842
    health-check-defaults: {interval: 5s, timeout: 2s, failures: 3}

``health-check-defaults`` (config file only) holds defaults for the knobs of Services' health
checks (``ipvsctl.io/health-check-<knob>``, see ipvsctl/checks/spec.py); a Service's own wins.
Durations take a unit (ms, s, m, h) or are plain seconds. Environment variables are the flag
names in capitals with IPVSCTL_ in front (IPVSCTL_MIN_SYNC_PERIOD); the typer options read
them, so they count as flags here. Mistakes raise ConfigError naming the file and the key.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from ipvsctl.checks.spec import check_defaults
from ipvsctl.errors import InputError
from ipvsctl.model.ipvs import SCHEDULERS, IPAddress
from ipvsctl.sources import files

from .http import parse_address


class ConfigError(Exception):
    """A configuration value is wrong; the message names where."""


@dataclass(frozen=True)
class AgentConfig:
    manifests: tuple[str, ...] = ()
    kubernetes: bool = False
    kubeconfig: str | None = None
    node_name: str | None = None
    node_ip: tuple[IPAddress, ...] = ()
    scheduler: str = "rr"
    interface: str = "ipvsctl0"
    adopt: bool = False
    sysctls: bool = True
    min_sync_period: float = 1.0
    sync_period: float = 30.0
    drain_timeout: float = 60.0
    drain_check: float = 2.0
    metrics_address: str = "127.0.0.1:9842"
    lock_timeout: float = 10.0
    health_check_defaults: tuple[tuple[str, str], ...] = ()  # knob → text, as the annotations hold them

    def check(self, where: str) -> AgentConfig:
        if bool(self.manifests) == self.kubernetes:
            raise ConfigError(f"{where}: give exactly one source: --manifests DIR or --kubernetes")
        if self.scheduler not in SCHEDULERS:
            raise ConfigError(f"{where}: scheduler: unknown {self.scheduler!r}; choose one of {', '.join(SCHEDULERS)}")
        for name in ("min_sync_period", "sync_period", "drain_timeout", "drain_check", "lock_timeout"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{where}: {name.replace('_', '-')}: must not be negative")
        if self.sync_period <= 0:
            raise ConfigError(f"{where}: sync-period: must be more than 0")
        try:
            check_defaults(dict(self.health_check_defaults))
        except InputError as err:
            knob = err.field.rsplit("health-check-", 1)[-1]
            raise ConfigError(f"{where}: health-check-defaults: {knob}: {err.message}") from None
        if self.metrics_address:
            try:
                parse_address(self.metrics_address)
            except ValueError as err:
                raise ConfigError(f"{where}: metrics-address: {err}") from None
        return self


DURATIONS = {"min_sync_period", "sync_period", "drain_timeout", "drain_check", "lock_timeout"}
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")


def parse_duration(value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a duration")
    if isinstance(value, int | float):
        return float(value)
    match = _DURATION.match(str(value))
    if not match:
        raise ValueError(f"{value!r} is not a duration (examples: 500ms, 1s, 2m, 30)")
    return float(match.group(1)) * _UNITS[match.group(2) or "s"]


def convert(name: str, value: Any) -> Any:
    """A raw value (from YAML or a flag) → the field's type; ValueError says why not."""
    if name in DURATIONS:
        return parse_duration(value)
    if name == "manifests":
        items = value if isinstance(value, list | tuple) else [value]
        return tuple(str(v) for v in items)
    if name == "health_check_defaults":
        if not isinstance(value, dict) or not all(isinstance(v, str | int | float) for v in value.values()):
            raise ValueError("must be a mapping of check settings to values, e.g. {interval: 5s, failures: 3}")
        return tuple(sorted((str(k), str(v).lower() if isinstance(v, bool) else str(v)) for k, v in value.items()))
    if name == "node_ip":
        items = value if isinstance(value, list | tuple) else [value]
        try:
            return tuple(ipaddress.ip_address(str(v)) for v in items)
        except ValueError as err:
            raise ValueError(str(err)) from None
    if name in ("kubernetes", "adopt", "sysctls"):
        if not isinstance(value, bool):
            raise ValueError(f"must be true or false, not {value!r}")
        return value
    if value is None:
        return None
    if isinstance(value, dict | list):
        raise ValueError(f"must be a single value, not a {type(value).__name__}")
    return str(value)


def read_file(path: Path) -> dict[str, Any]:
    """The config file as field name → converted value."""
    try:
        data = files.read_file(str(path))
    except OSError as err:
        raise ConfigError(f"{path}: cannot read: {err.strerror or err}") from None
    try:
        raw = files.single_document(str(path), data)
    except ValueError as err:
        raise ConfigError(f"{path}: {err}") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: must be a mapping of option names to values")
    known = {f.name for f in fields(AgentConfig)}
    out: dict[str, Any] = {}
    for key, value in raw.items():
        name = str(key).replace("-", "_")
        if name not in known:
            names = ", ".join(sorted(k.replace("_", "-") for k in known))
            raise ConfigError(f"{path}: {key}: unknown option; known: {names}")
        try:
            out[name] = convert(name, value)
        except ValueError as err:
            raise ConfigError(f"{path}: {key}: {err}") from None
    return out


def build(config_file: Path | None, flags: Mapping[str, Any]) -> AgentConfig:
    """Defaults, then the file, then flags that were given (None = not given)."""
    values: dict[str, Any] = read_file(config_file) if config_file else {}
    for name, value in flags.items():
        if value is None or (isinstance(value, list | tuple) and not value):
            continue
        try:
            values[name] = convert(name, value)
        except ValueError as err:
            raise ConfigError(f"--{name.replace('_', '-')}: {err}") from None
    where = str(config_file) if config_file else "options"
    return replace(AgentConfig(), **values).check(where)
