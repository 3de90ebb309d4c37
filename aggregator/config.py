"""Settings: TOML file (see config/aggregator.toml) + environment -> one frozen Settings.

Every setting has a default; a file only needs the ones it changes. Unknown sections or keys,
wrong types and out-of-range values raise ConfigError with the file, the key and what is allowed.

    settings = load_settings(Path("aggregator.toml"))
    settings.fetch.max_body_bytes   # 10485760
"""

from __future__ import annotations

import os
import tomllib
import typing
from pathlib import Path

import msgspec

from .dedup.base import ClusterSettings
from .errors import ConfigError
from .scheduling import ScheduleSettings

ENV_DB = "AGGREGATOR_DB"
ENV_CONFIG = "AGGREGATOR_CONFIG"


class FetchSettings(msgspec.Struct, frozen=True):
    # Seconds to wait for a TCP/TLS connection.
    connect_timeout: float = 10.0
    # Seconds to wait between two reads of the body.
    read_timeout: float = 20.0
    # Seconds for the whole request, redirects and body included.
    total_timeout: float = 60.0
    # Largest body accepted, counted after gzip/deflate decoding.
    max_body_bytes: int = 10 * 1024 * 1024
    # Redirect hops followed before giving up.
    max_redirects: int = 5
    # Feeds fetched at once. httpx's CPU per request grows with concurrency; keep it modest.
    concurrency: int = 16
    # Feeds fetched at once from one host (0: no per-host limit).
    per_host: int = 4
    # Processes that parse, normalize and store fetched feeds while the round goes on
    # fetching, then write the stories while it clusters (rounds of at least 100 feeds; 0:
    # all of it in the round's process).
    parse_processes: int = 1
    # Appended to the User-Agent, e.g. a contact URL or e-mail for server operators.
    user_agent_contact: str = ""
    # Fetch feeds on private, loopback and link-local addresses. Turn off for deployments
    # that take feed URLs from others (local feeds are legitimate, so it is on by default).
    allow_private_addresses: bool = True

    def validate(self) -> None:
        for name in ("connect_timeout", "read_timeout", "total_timeout"):
            _check_range(f"fetch.{name}", getattr(self, name), 0.1, 600)
        _check_range("fetch.max_body_bytes", self.max_body_bytes, 1024, 1024**3)
        _check_range("fetch.max_redirects", self.max_redirects, 0, 20)
        _check_range("fetch.concurrency", self.concurrency, 1, 256)
        _check_range("fetch.per_host", self.per_host, 0, 256)
        _check_range("fetch.parse_processes", self.parse_processes, 0, 64)


class StoreSettings(msgspec.Struct, frozen=True):
    # Path of the SQLite file (or a postgresql:// URL). Empty: a file in the user's data dir.
    path: str = ""
    # Shared stores (PostgreSQL): seconds a worker holds the feeds it claimed before others
    # may take them (at least as long as a fetch can wait and take; raised to that if lower).
    lease_seconds: float = 300.0

    def validate(self) -> None:
        _check_range("store.lease_seconds", self.lease_seconds, 1, 86400)


class DaemonSettings(msgspec.Struct, frozen=True):
    # Seconds between the daemon's looks for due feeds.
    tick_seconds: float = 30.0
    # Entries (and stories with no newer entry) older than this many days are removed.
    retention_days: float = 90.0
    # Port for Prometheus metrics and /healthz on 127.0.0.1 (0: off).
    metrics_port: int = 0
    # Seconds a stopping daemon waits for the round in progress before it gives up on it.
    stop_timeout_seconds: float = 20.0

    def validate(self) -> None:
        _check_range("daemon.tick_seconds", self.tick_seconds, 0.05, 86400)
        _check_range("daemon.retention_days", self.retention_days, 1, 36500)
        _check_range("daemon.metrics_port", self.metrics_port, 0, 65535)
        _check_range("daemon.stop_timeout_seconds", self.stop_timeout_seconds, 1, 3600)


class Settings(msgspec.Struct, frozen=True):
    fetch: FetchSettings = msgspec.field(default_factory=FetchSettings)
    store: StoreSettings = msgspec.field(default_factory=StoreSettings)
    cluster: ClusterSettings = msgspec.field(default_factory=ClusterSettings)
    schedule: ScheduleSettings = msgspec.field(default_factory=ScheduleSettings)
    daemon: DaemonSettings = msgspec.field(default_factory=DaemonSettings)

    def validate(self) -> Settings:
        for name in self.__struct_fields__:
            try:
                getattr(self, name).validate()
            except ValueError as e:  # sections outside this module report plain ValueErrors
                raise ConfigError(f"config: {e}") from None
        return self


def _check_range(key: str, value: float, lo: float, hi: float) -> None:
    if not lo <= value <= hi:
        raise ConfigError(f"config: {key} = {value!r} is out of range; use a value in [{lo}, {hi}]")


def _coerce(key: str, value: object, typ: object) -> object:
    if typ is float and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if typ in (int, str, bool) and type(value) is typ:
        return value
    name = getattr(typ, "__name__", str(typ))
    raise ConfigError(
        f"config: {key} must be {name}, got {type(value).__name__} {value!r}; fix the value"
    )


def settings_from_dict(data: dict, source: str = "config") -> Settings:
    """Build validated Settings from a dict shaped like the TOML file."""
    sections = {}
    hints = typing.get_type_hints(Settings)
    for section, raw in data.items():
        if section not in hints:
            known = ", ".join(sorted(hints))
            raise ConfigError(f"{source}: unknown section [{section}]; known sections: {known}")
        if not isinstance(raw, dict):
            raise ConfigError(f"{source}: [{section}] must be a table of settings")
        cls = hints[section]
        field_types = typing.get_type_hints(cls)
        values = {}
        for key, value in raw.items():
            if key not in field_types:
                known = ", ".join(sorted(field_types))
                raise ConfigError(f"{source}: unknown key {section}.{key}; known keys: {known}")
            values[key] = _coerce(f"{section}.{key}", value, field_types[key])
        sections[section] = cls(**values)
    try:
        return Settings(**sections).validate()
    except ConfigError as e:
        raise ConfigError(str(e).replace("config:", f"{source}:", 1)) from None


def load_settings(path: Path | None = None) -> Settings:
    """Read the TOML file at ``path`` (or $AGGREGATOR_CONFIG); defaults when neither is set."""
    if path is None and os.environ.get(ENV_CONFIG):
        path = Path(os.environ[ENV_CONFIG])
    if path is None:
        return Settings()
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist; check the --config path") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"config file {path} cannot be read: {e}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"config file {path} is not valid TOML: {e}") from None
    return settings_from_dict(data, str(path))


def default_toml() -> str:
    """The sample file: every setting with its default and the comment above it in this module."""
    import inspect

    lines = ["# aggregator settings. Every key is optional; shown here with its default.", ""]
    for section in msgspec.structs.fields(Settings):
        cls = section.type
        lines.append(f"[{section.name}]")
        comments = _field_comments(inspect.getsource(cls))
        for f in msgspec.structs.fields(cls):
            for c in comments.get(f.name, []):
                lines.append(f"# {c}")
            lines.append(f"{f.name} = {_toml_value(f.default)}")
        lines.append("")
    return "\n".join(lines)


def _field_comments(source: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    pending: list[str] = []
    for line in source.splitlines():
        s = line.strip()
        if s.startswith("#"):
            pending.append(s.lstrip("# ").rstrip())
        elif ":" in s and not s.startswith(("def ", "class ", "@")) and pending:
            out[s.split(":", 1)[0].strip()] = pending
            pending = []
        else:
            pending = []
    return out


def _toml_value(v: object) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return repr(v)


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_duration(text: str) -> float:
    """'90s', '30m', '24h', '7d', '2w' (or a bare number of seconds) -> seconds."""
    import re

    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*", text or "", re.IGNORECASE)
    if not m:
        raise ConfigError(
            f"{text!r} is not a duration; use a number and a unit, like 30m, 24h or 7d"
        )
    return float(m.group(1)) * _UNITS[(m.group(2) or "s").lower()]
