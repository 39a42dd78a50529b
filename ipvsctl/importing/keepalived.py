"""Pure: keepalived.conf statements (``syntax.py``) → its virtual servers as frozen values, and
those → ``Imported`` virtual servers with ``Note``s on all that ipvsctl cannot express.

Only the virtual-server half of keepalived is read. What has no equivalent (VRRP, fwmark and
group virtual servers, notifier scripts, alpha/omega, hysteresis, checkers other than TCP_CHECK,
HTTP_GET, SSL_GET and MISC_CHECK, keywords this module does not know) becomes a note naming the
file and line; a value that is not what keepalived takes (a bad address, port or number) is a
``ConfigError``. keepalived's defaults are kept, as keepalived 2.2.7 applies them in the test VM:
scheduler ``wlc``, forwarding NAT, protocol **UDP** (earlier keepalived versions took TCP),
persistence 360 s when ``persistence_timeout`` has no value, weight 1; a real server's port is
the virtual server's when it has none, and always with DR and TUN; a virtual server without
real servers is not created; a quorum above the real servers' total weight is reduced to it.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from ipvsctl.importing import checks
from ipvsctl.importing.model import ConfigError, Imported, Note, Real, Result, Sorry, Where
from ipvsctl.importing.syntax import Statement, Token
from ipvsctl.model.ipvs import SCHEDULER_FLAGS, SCHEDULERS, Forward, IPAddress, Protocol

DEFAULT_SCHEDULER = "wlc"
DEFAULT_PERSISTENCE = 360  # keepalived: "persistence_timeout [<INTEGER>]", default 6 minutes
MAX_PERSISTENCE = 86400  # Kubernetes' limit for sessionAffinityConfig.clientIP.timeoutSeconds
MAX_WEIGHT = 65535
METHODS = {"NAT": Forward.MASQ, "DR": Forward.ROUTE, "TUN": Forward.TUNNEL}
FLAG_ALIASES = {"flag-1": "fallback", "flag-2": "port"}  # for sh and mh, as ipvsadm -b names them
CHECKERS = ("TCP_CHECK", "HTTP_GET", "SSL_GET", "MISC_CHECK")
OTHER_CHECKERS = ("DNS_CHECK", "SMTP_CHECK", "BFD_CHECK", "UDP_CHECK", "PING_CHECK", "FILE_CHECK")

# Keywords keepalived knows that ipvsctl cannot express, with the reason shown.
VS_UNSUPPORTED = {
    "hysteresis": "ipvsctl switches to the sorry server exactly below the quorum (no hysteresis)",
    "alpha": "ipvsctl counts a real server healthy until its first check (keepalived without alpha)",
    "omega": "ipvsctl runs no notifier scripts",
    "quorum_up": "ipvsctl runs no notifier scripts",
    "quorum_down": "ipvsctl runs no notifier scripts",
    "ha_suspend": "ipvsctl does not watch for the virtual address",
    "smtp_alert": "ipvsctl sends no mail; its transitions are log events and metrics",
    "snmp_name": "ipvsctl has no SNMP",
    "ip_family": "only for fwmark virtual servers, which ipvsctl has not",
    "ops": "ipvsctl has no one-packet scheduling",
    "persistence_engine": "ipvsctl has no persistence engines",
    "sorry_server_inhibit": "ipvsctl's sorry server is deleted when it leaves, not kept at weight 0",
    "sorry_server_lvs_method": "ipvsctl's sorry server uses the Service's forwarding method",
}
RS_UNSUPPORTED = {
    "notify_up": "ipvsctl runs no notifier scripts",
    "notify_down": "ipvsctl runs no notifier scripts",
    "smtp_alert": "ipvsctl sends no mail; its transitions are log events and metrics",
    "snmp_name": "ipvsctl has no SNMP",
    "alpha": "ipvsctl counts a real server healthy until its first check (keepalived without alpha)",
}
CHECKER_UNSUPPORTED = {
    "connect_ip": "ipvsctl checks the real server's own address",
    "bindto": "ipvsctl does not choose the source address of a check",
    "bind_if": "ipvsctl does not choose the interface of a check",
    "bind_port": "ipvsctl does not choose the source port of a check",
    "fwmark": "ipvsctl does not mark check packets",
    "alpha": "ipvsctl counts a real server healthy until its first check (keepalived without alpha)",
    "log_all_failures": "ipvsctl logs transitions only",
    "http_protocol": "ipvsctl's HTTP checks speak HTTP/1.1",
    "fast_recovery": "ipvsctl checks one URL, so there is nothing to speed up",
    "enable_sni": "ipvsctl's HTTPS checks send the host name as SNI when health-check-host is set",
    "misc_dynamic": "ipvsctl does not set weights from a check's exit status",
    "user": "ipvsctl runs exec checks as the agent's user",
}
URL_UNSUPPORTED = {
    "digest": "ipvsctl's HTTP checks do not compare body digests",
    "regex": "ipvsctl's HTTP checks do not match the body",
    "regex_no_match": "ipvsctl's HTTP checks do not match the body",
    "regex_options": "ipvsctl's HTTP checks do not match the body",
    "regex_stack": "ipvsctl's HTTP checks do not match the body",
    "regex_min_offset": "ipvsctl's HTTP checks do not match the body",
    "regex_max_offset": "ipvsctl's HTTP checks do not match the body",
}
GLOBAL_LVS_PREFIX = "lvs_"  # global_defs keywords about IPVS (lvs_flush, lvs_timeouts, lvs_sync_daemon)


# --- the configuration as values ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Defaults:
    """Checker settings a virtual server passes to its real servers and they to their checkers."""

    delay_loop: float | None = None
    connect_timeout: float | None = None
    retry: int | None = None
    delay_before_retry: float | None = None
    warmup: float | None = None
    inhibit_on_failure: bool | None = None
    virtualhost: str | None = None

    def then(self, inner: Defaults) -> Defaults:
        """These defaults, overridden by whatever ``inner`` sets."""
        return Defaults(*(i if i is not None else o for o, i in zip(_values(self), _values(inner), strict=True)))


def _values(d: Defaults) -> tuple[object, ...]:
    return (d.delay_loop, d.connect_timeout, d.retry, d.delay_before_retry, d.warmup, d.inhibit_on_failure,
            d.virtualhost)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Url:
    where: Where
    path: str | None = None
    status_codes: tuple[str, ...] = ()
    virtualhost: str | None = None


@dataclass(frozen=True, slots=True)
class Checker:
    kind: str  # one of CHECKERS
    where: Where
    defaults: Defaults = Defaults()
    connect_port: int | None = None
    urls: tuple[Url, ...] = ()
    misc_path: str | None = None
    misc_timeout: float | None = None


@dataclass(frozen=True, slots=True)
class RealServer:
    where: Where
    address: IPAddress
    port: int | None
    weight: int = 1
    method: str | None = None  # NAT, DR, TUN; None: the virtual server's
    defaults: Defaults = Defaults()
    checkers: tuple[Checker, ...] = ()


@dataclass(frozen=True, slots=True)
class VirtualServer:
    where: Where
    address: IPAddress
    port: int | None
    protocol: str = "UDP"  # keepalived 2.2's default ("no protocol set - defaulting to UDP")
    scheduler: str | None = None
    flags: tuple[str, ...] = ()
    method: str = "NAT"
    persistence: int | None = None
    sorry: tuple[Where, IPAddress, int | None] | None = None
    quorum: int | None = None
    defaults: Defaults = Defaults()
    reals: tuple[RealServer, ...] = ()


@dataclass(frozen=True, slots=True)
class Config:
    servers: tuple[VirtualServer, ...]
    notes: tuple[Note, ...]


# --- values --------------------------------------------------------------------------------


def _one(st: Statement, what: str) -> Token:
    if len(st.args) != 1:
        raise ConfigError(st.where, f"{st.keyword} takes one {what}")
    return st.args[0]


def _address(token: Token) -> IPAddress:
    try:
        return ipaddress.ip_address(token.text)
    except ValueError:
        raise ConfigError(token.where, f"{token.text!r} is not an IP address") from None


def _integer(token: Token, low: int, high: int, what: str) -> int:
    text = token.text
    if not (text.isascii() and text.isdigit() and len(text) <= 10 and low <= int(text) <= high):
        raise ConfigError(token.where, f"{what} {text!r} must be a whole number {low}…{high}")
    return int(text)


def _port(token: Token) -> int:
    return _integer(token, 0, 65535, "port")


def _timer(st: Statement) -> float:
    token = _one(st, "number of seconds")
    try:
        value = float(token.text)
    except ValueError:
        value = -1.0
    if not (0 <= value <= 10**9) or not token.text.replace(".", "", 1).isdigit():
        raise ConfigError(token.where, f"{st.keyword} {token.text!r} must be a number of seconds")
    return value


def _boolean(st: Statement) -> bool:
    if not st.args:
        return True
    word = _one(st, "on or off").text.lower()
    if word in ("on", "true", "yes"):
        return True
    if word in ("off", "false", "no"):
        return False
    raise ConfigError(st.where, f"{st.keyword} {st.args[0].text!r} must be on or off (true/false, yes/no)")


def _endpoint(st: Statement) -> tuple[IPAddress, int | None]:
    """``IP [PORT]``."""
    if not 1 <= len(st.args) <= 2:
        raise ConfigError(st.where, f"{st.keyword} takes an address and an optional port")
    return _address(st.args[0]), _port(st.args[1]) if len(st.args) == 2 else None


# --- statements → values -------------------------------------------------------------------


class _Reader:
    """Reads statements into values, collecting notes (a reader is used for one parse)."""

    def __init__(self) -> None:
        self.notes: list[Note] = []

    def note(self, where: Where, message: str) -> None:
        self.notes.append(Note(where, message))

    def unknown(self, st: Statement, inside: str) -> None:
        self.note(st.where, f"{st.keyword}: unknown keyword in {inside}; not imported")

    def defaults(self, st: Statement, d: Defaults) -> Defaults | None:
        """``d`` with the cascading setting ``st`` applied, or None if ``st`` is not one."""
        key = "retry" if st.keyword == "nb_get_retry" else st.keyword
        if key in ("delay_loop", "connect_timeout", "delay_before_retry", "warmup"):
            return replace(d, **{key: _timer(st)})
        if key == "retry":
            return replace(d, retry=_integer(_one(st, "count"), 0, 10**6, "retry"))
        if key == "inhibit_on_failure":
            return replace(d, inhibit_on_failure=_boolean(st))
        if key == "virtualhost":
            return replace(d, virtualhost=_one(st, "host name").text)
        return None

    def config(self, statements: Sequence[Statement]) -> Config:
        servers: list[VirtualServer] = []
        for st in statements:
            if st.keyword == "virtual_server":
                vs = self.virtual_server(st)
                if vs is not None:
                    servers.append(vs)
            elif st.keyword == "global_defs":
                for inner in st.block or ():
                    if inner.keyword.startswith(GLOBAL_LVS_PREFIX):
                        self.note(inner.where, f"{inner.keyword}: a global IPVS setting; not imported")
            elif st.keyword.startswith("vrrp_") or st.keyword in ("static_ipaddress", "static_routes", "static_rules"):
                self.note(st.where, f"{st.keyword}: VRRP and addresses are keepalived's other half; keep it for them")
            elif st.keyword == "virtual_server_group":
                self.note(st.where, "virtual_server_group: not imported; give one Service several addresses instead")
            elif st.keyword[:1] in ("@", "$", "~"):
                self.note(st.where, f"{st.keyword}: conditional configuration and parameters are not imported")
            else:
                self.note(st.where, f"{st.keyword}: not a virtual server; not imported")
        return Config(tuple(servers), tuple(self.notes))

    def virtual_server(self, st: Statement) -> VirtualServer | None:
        if st.args and st.args[0].text in ("fwmark", "group") and not st.args[0].quoted:
            kind = "firewall-mark" if st.args[0].text == "fwmark" else "group"
            self.note(st.where, f"virtual_server {st.args[0].text}: ipvsctl has no {kind} virtual servers")
            return None
        if st.block is None:
            raise ConfigError(st.where, "virtual_server needs a { … } block")
        address, port = _endpoint(st)
        vs = VirtualServer(st.where, address, port)
        reals: list[RealServer] = []
        for inner in st.block:
            key = inner.keyword
            defaults = self.defaults(inner, vs.defaults)
            if defaults is not None:
                vs = replace(vs, defaults=defaults)
            elif key in ("lb_algo", "lvs_sched"):
                vs = replace(vs, scheduler=_one(inner, "scheduler").text)
            elif key in ("lb_kind", "lvs_method"):
                vs = replace(vs, method=self.method(inner))
            elif key == "protocol":
                proto = _one(inner, "protocol").text.upper()
                if proto not in Protocol.__members__:
                    raise ConfigError(inner.where, f"protocol {inner.args[0].text!r} must be TCP, UDP or SCTP")
                vs = replace(vs, protocol=proto)
            elif key == "persistence_timeout":
                timeout = _integer(inner.args[0], 0, 2**32 - 1, "timeout") if inner.args else DEFAULT_PERSISTENCE
                vs = replace(vs, persistence=timeout)
            elif key == "persistence_granularity":
                mask = _one(inner, "netmask").text
                if mask not in ("255.255.255.255", "128"):
                    self.note(inner.where, "persistence_granularity: ipvsctl's persistence is per client address")
            elif key == "sorry_server":
                sorry_address, sorry_port = _endpoint(inner)
                vs = replace(vs, sorry=(inner.where, sorry_address, sorry_port))
            elif key == "quorum":
                vs = replace(vs, quorum=_integer(_one(inner, "number"), 0, 2**31 - 1, "quorum"))
            elif key in ("sh-port", "sh-fallback", "mh-port", "mh-fallback", "flag-1", "flag-2", "flag-3"):
                vs = replace(vs, flags=(*vs.flags, key))
            elif key == "real_server":
                reals.append(self.real_server(inner))
            elif key in VS_UNSUPPORTED:
                self.note(inner.where, f"{key}: {VS_UNSUPPORTED[key]}")
            else:
                self.unknown(inner, "virtual_server")
        return replace(vs, reals=tuple(reals))

    def method(self, st: Statement) -> str:
        if not st.args or st.args[0].text.upper() not in METHODS:
            raise ConfigError(st.where, f"{st.keyword} must be NAT, DR or TUN")
        if len(st.args) > 1:
            self.note(st.where, f"{st.keyword} {' '.join(t.text for t in st.args)}: ipvsctl tunnels with ipip only")
        return st.args[0].text.upper()

    def real_server(self, st: Statement) -> RealServer:
        address, port = _endpoint(st)
        rs = RealServer(st.where, address, port)
        found: list[Checker] = []
        for inner in st.block or ():
            key = inner.keyword
            defaults = self.defaults(inner, rs.defaults)
            if defaults is not None:
                rs = replace(rs, defaults=defaults)
            elif key == "weight":
                rs = replace(rs, weight=_integer(_one(inner, "weight"), 0, 2**31 - 1, "weight"))
            elif key == "lvs_method":
                rs = replace(rs, method=self.method(inner))
            elif key in ("uthreshold", "lthreshold"):
                if _integer(_one(inner, "number"), 0, 2**31 - 1, key) != 0:
                    self.note(inner.where, f"{key}: ipvsctl sets no connection thresholds")
            elif key in CHECKERS:
                found.append(self.checker(inner))
            elif key in OTHER_CHECKERS:
                self.note(inner.where, f"{key}: ipvsctl has no such check (tcp, http, https and exec only)")
            elif key in RS_UNSUPPORTED:
                self.note(inner.where, f"{key}: {RS_UNSUPPORTED[key]}")
            else:
                self.unknown(inner, "real_server")
        return replace(rs, checkers=tuple(found))

    def checker(self, st: Statement) -> Checker:
        check = Checker(st.keyword, st.where)
        urls: list[Url] = []
        http = st.keyword in ("HTTP_GET", "SSL_GET")
        for inner in st.block or ():
            key = inner.keyword
            defaults = self.defaults(inner, check.defaults)
            if defaults is not None and (key != "virtualhost" or http):
                check = replace(check, defaults=defaults)
            elif key == "connect_port" and st.keyword != "MISC_CHECK":
                check = replace(check, connect_port=_port(_one(inner, "port")))
            elif key == "url" and http:
                urls.append(self.url(inner))
            elif key == "misc_path" and st.keyword == "MISC_CHECK":
                if not inner.args:
                    raise ConfigError(inner.where, "misc_path takes a command")
                check = replace(check, misc_path=" ".join(t.text for t in inner.args))
            elif key == "misc_timeout" and st.keyword == "MISC_CHECK":
                check = replace(check, misc_timeout=_timer(inner))
            elif key in CHECKER_UNSUPPORTED:
                self.note(inner.where, f"{key}: {CHECKER_UNSUPPORTED[key]}")
            else:
                self.unknown(inner, st.keyword)
        return replace(check, urls=tuple(urls))

    def url(self, st: Statement) -> Url:
        url = Url(st.where)
        for inner in st.block or ():
            key = inner.keyword
            if key == "path":
                url = replace(url, path=_one(inner, "path").text)
            elif key == "status_code":
                if not inner.args:
                    raise ConfigError(inner.where, "status_code takes codes or ranges")
                url = replace(url, status_codes=(*url.status_codes, *(t.text for t in inner.args)))
            elif key == "virtualhost":
                url = replace(url, virtualhost=_one(inner, "host name").text)
            elif key in URL_UNSUPPORTED:
                self.note(inner.where, f"{key}: {URL_UNSUPPORTED[key]}")
            else:
                self.unknown(inner, "url")
        return url


def read(statements: Sequence[Statement]) -> Config:
    """The virtual servers of a parsed keepalived.conf, and notes on what was not read."""
    return _Reader().config(statements)


# --- values → Imported ---------------------------------------------------------------------


def imported(config: Config) -> Result:
    """Each virtual server as ipvsctl can express it; the config's notes and more."""
    notes = list(config.notes)
    servers: list[Imported] = []
    seen: dict[tuple[str, IPAddress, int], Where] = {}
    for vs in config.servers:
        server = _server(vs, notes.append)
        if server is None:
            continue
        key = (vs.protocol, vs.address, server.port)
        if key in seen:
            notes.append(Note(vs.where, f"the same virtual server as at {seen[key]}; only that one is imported"))
            continue
        seen[key] = vs.where
        servers.append(server)
    return Result(tuple(servers), tuple(sorted(notes, key=lambda n: (n.where.file, n.where.line))))


def _flags(vs: VirtualServer, scheduler: str, note: Callable[[Note], None]) -> tuple[str, ...]:
    flags: list[str] = []
    for flag in vs.flags:
        name = f"{scheduler}-{FLAG_ALIASES[flag]}" if flag in FLAG_ALIASES and scheduler in ("sh", "mh") else flag
        if name not in SCHEDULER_FLAGS or not name.startswith(scheduler + "-"):
            note(Note(vs.where, f"{flag}: ipvsctl has no such flag for scheduler {scheduler}"))
        elif name not in flags:
            flags.append(name)
    return tuple(sorted(flags))


def _server(vs: VirtualServer, note: Callable[[Note], None]) -> Imported | None:
    if not vs.port:
        note(Note(vs.where, "a virtual server without a port (every port): a Service port is 1…65535"))
        return None
    if not vs.reals:
        note(Note(vs.where, "a virtual server without real servers: keepalived ignores it, and so does the import"))
        return None
    scheduler = vs.scheduler or DEFAULT_SCHEDULER
    if scheduler not in SCHEDULERS:
        note(Note(vs.where, f"unknown scheduler {scheduler!r}; ipvsctl knows {', '.join(SCHEDULERS)}"))
        return None
    forward = METHODS[vs.method]
    persistence = vs.persistence or None
    if persistence is not None and persistence > MAX_PERSISTENCE:
        note(Note(vs.where, f"persistence_timeout {persistence}: at most {MAX_PERSISTENCE} s; set to that"))
        persistence = MAX_PERSISTENCE
    reals: list[Real] = []
    kept: list[RealServer] = []
    weights: dict[IPAddress, tuple[int, Where]] = {}
    seen: set[tuple[IPAddress, int]] = set()
    for rs in vs.reals:
        port = rs.port if rs.port is not None else vs.port
        if rs.address.version != vs.address.version:
            note(Note(rs.where, f"real server {rs.address} is of another family than its virtual server; left out"))
            continue
        if rs.method is not None and rs.method != vs.method:
            note(Note(rs.where, f"lvs_method {rs.method}: ipvsctl forwards to all real servers of a Service alike; "
                                f"{vs.method} is used"))  # fmt: skip
        if forward != Forward.MASQ:
            port = vs.port  # as keepalived ("ports don't match - resetting") and ipvsadm do
        if (rs.address, port) in seen:
            note(Note(rs.where, f"real server {rs.address} port {port} is given twice; the first is kept"))
            continue
        weight = rs.weight
        if weight > MAX_WEIGHT:
            note(Note(rs.where, f"weight {weight}: at most {MAX_WEIGHT}; set to that"))
            weight = MAX_WEIGHT
        if rs.address in weights and weights[rs.address][0] != weight:
            first, where = weights[rs.address]
            note(Note(rs.where, f"weight {weight}: ipvsctl weighs an address once, and {rs.address} has weight "
                                f"{first} at {where}; that is used"))  # fmt: skip
            weight = first
        weights.setdefault(rs.address, (weight, rs.where))
        seen.add((rs.address, port))
        reals.append(Real(rs.address, port, weight, rs.where))
        kept.append(rs)
    sorry = None
    if vs.sorry is not None:
        where, address, sorry_port = vs.sorry
        if address.version != vs.address.version:
            note(Note(where, f"sorry server {address} is of another family than its virtual server; left out"))
        else:
            sorry = Sorry(address, vs.port if sorry_port is None or forward != Forward.MASQ else sorry_port)
    quorum = vs.quorum
    if quorum is not None and quorum > sum(r.weight for r in reals):
        # keepalived: "quorum N exceeds total weight of real servers W, reducing quorum to W"
        quorum = sum(r.weight for r in reals)
    quorum = quorum if quorum not in (None, 0, 1) else None
    if quorum is not None and sorry is None:
        note(Note(vs.where, f"quorum {quorum}: without a sorry server it only runs keepalived's scripts; left out"))
        quorum = None
    check, check_notes = checks.service_check(vs, kept)
    for n in check_notes:
        note(n)
    return Imported(
        where=vs.where,
        protocol=Protocol[vs.protocol],
        address=vs.address,
        port=vs.port,
        scheduler=scheduler,
        scheduler_flags=_flags(vs, scheduler, note),
        persistence=persistence,
        forward=forward,
        reals=tuple(reals),
        sorry=sorry,
        quorum=quorum,
        check=check,
    )
