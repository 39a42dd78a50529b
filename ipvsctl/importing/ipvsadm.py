"""Pure: ``ipvsadm -Sn`` (``ipvsadm-save -n``) output → ``Imported`` virtual servers and notes.

Each line is one ipvsadm command without the program name: ``-A`` adds a virtual server
(``-t``/``-u``/``--sctp-service`` ADDRESS:PORT, ``-s`` scheduler, ``-p`` [timeout], ``-M``
netmask, ``-b`` scheduler flags), ``-a`` adds a real server to one (``-r`` ADDRESS[:PORT],
``-m``/``-g``/``-i``, ``-w`` weight, ``-x``/``-y`` thresholds). IPv6 addresses are bracketed.
Blank lines and ``#`` comments are skipped. ipvsadm's own defaults hold for what a line leaves
out (scheduler wlc, persistence 300 s, forwarding by direct routing, weight 1).

Firewall-mark virtual servers, one-packet scheduling, persistence engines, netmasks other than
a single address, thresholds and tunnel options are notes: ipvsctl cannot say them. Names
instead of numbers (``ipvsadm -S`` without ``-n``) and anything else ipvsadm would not take
are a ``ConfigError`` naming the line.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, replace

from ipvsctl.importing.model import ConfigError, Imported, Note, Real, Result, Where
from ipvsctl.model.ipvs import SCHEDULER_FLAGS, Forward, IPAddress, Protocol

DEFAULT_SCHEDULER = "wlc"
DEFAULT_PERSISTENCE = 300
MAX_PERSISTENCE = 86400  # Kubernetes' limit for sessionAffinityConfig.clientIP.timeoutSeconds
MAX_WEIGHT = 65535
MAX_LINES = 1_000_000
SERVICE_OPTIONS = {"-t": Protocol.TCP, "--tcp-service": Protocol.TCP, "-u": Protocol.UDP,
                   "--udp-service": Protocol.UDP, "--sctp-service": Protocol.SCTP}  # fmt: skip
FORWARD_OPTIONS = {"-m": Forward.MASQ, "--masquerading": Forward.MASQ, "-g": Forward.ROUTE,
                   "--gatewaying": Forward.ROUTE, "-i": Forward.TUNNEL, "--ipip": Forward.TUNNEL}  # fmt: skip
FORWARD_NAMES = {Forward.MASQ: "-m", Forward.ROUTE: "-g", Forward.TUNNEL: "-i"}
FLAG_ALIASES = {"flag-1": "fallback", "flag-2": "port"}
TAKES_VALUE = {"-s", "--scheduler", "-M", "--netmask", "-b", "--sched-flags", "--pe", "--persistence-engine",
               "-r", "--real-server", "-w", "--weight", "-x", "--u-threshold", "-y", "--l-threshold",
               "--tun-type", "--tun-port", "-f", "--fwmark-service", *SERVICE_OPTIONS}  # fmt: skip


@dataclass(frozen=True, slots=True)
class _Line:
    where: Where
    options: tuple[tuple[str, str | None], ...]  # (option, value) in order


@dataclass(frozen=True, slots=True)
class _Service:
    where: Where
    protocol: Protocol
    address: IPAddress
    port: int
    scheduler: str = DEFAULT_SCHEDULER
    flags: tuple[str, ...] = ()
    persistence: int | None = None


def _words(text: str, where: Where) -> _Line:
    words = text.split()
    options: list[tuple[str, str | None]] = []
    i = 0
    while i < len(words):
        word = words[i]
        if not word.startswith("-"):
            raise ConfigError(where, f"{word!r} is not an ipvsadm option")
        if word in ("-p", "--persistent"):  # an optional value
            value = words[i + 1] if i + 1 < len(words) and not words[i + 1].startswith("-") else None
            options.append((word, value))
            i += 2 if value is not None else 1
        elif word in TAKES_VALUE:
            if i + 1 >= len(words):
                raise ConfigError(where, f"{word} needs a value")
            options.append((word, words[i + 1]))
            i += 2
        else:
            options.append((word, None))
            i += 1
    return _Line(where, tuple(options))


def _endpoint(text: str, where: Where, default_port: int | None) -> tuple[IPAddress, int]:
    """``A.B.C.D[:PORT]`` or ``[IPV6][:PORT]``."""
    host, port_text = text, ""
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise ConfigError(where, f"{text!r} is not [IPv6 address]:port")
        port_text = rest[1:]
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise ConfigError(where, f"{host!r} is not an IP address (names need ipvsadm -Sn, with -n)") from None
    if not port_text:
        if default_port is None:
            raise ConfigError(where, f"{text!r} has no port")
        return address, default_port
    if not (port_text.isascii() and port_text.isdigit() and len(port_text) <= 5 and int(port_text) <= 65535):
        raise ConfigError(where, f"port {port_text!r} is not a number 0…65535 (names need ipvsadm -Sn, with -n)")
    return address, int(port_text)


def _number(text: str | None, where: Where, what: str, high: int) -> int:
    if text is None or not (text.isascii() and text.isdigit() and len(text) <= 10 and int(text) <= high):
        raise ConfigError(where, f"{what} {text!r} must be a whole number 0…{high}")
    return int(text)


def _key(line: _Line) -> tuple[Protocol, IPAddress, int] | None:
    """The virtual server a line names; None for a firewall mark."""
    for option, value in line.options:
        if option in SERVICE_OPTIONS:
            assert value is not None
            address, port = _endpoint(value, line.where, None)
            return SERVICE_OPTIONS[option], address, port
        if option in ("-f", "--fwmark-service"):
            return None
    raise ConfigError(line.where, "names no virtual server (-t, -u, --sctp-service or -f)")


def parse(text: str, file: str = "<stdin>") -> Result:
    """The virtual servers of ``ipvsadm -Sn`` output."""
    notes: list[Note] = []
    services: dict[tuple[Protocol, IPAddress, int], _Service] = {}
    reals: dict[tuple[Protocol, IPAddress, int], list[tuple[Real, Forward]]] = {}
    fwmark_lines: list[Where] = []
    lines = text.splitlines()
    if len(lines) > MAX_LINES:
        raise ConfigError(Where(file, MAX_LINES + 1), f"more than {MAX_LINES} lines")
    for number, raw in enumerate(lines, 1):
        where = Where(file, number)
        body = raw.split("#", 1)[0].strip()
        if not body:
            continue
        line = _words(body, where)
        command = line.options[0][0]
        if command in ("-A", "--add-service"):
            key = _key(line)
            if key is None:
                notes.append(Note(where, "a firewall-mark virtual server: ipvsctl has none"))
                fwmark_lines.append(where)
                continue
            if key in services:
                raise ConfigError(where, f"virtual server {_show(key)} is added twice (first at {services[key].where})")
            services[key] = _service(line, key, notes)
            reals[key] = []
        elif command in ("-a", "--add-server"):
            key = _key(line)
            if key is None:
                continue  # a real server of a firewall-mark virtual server: noted with it
            if key not in services:
                raise ConfigError(where, f"real server of {_show(key)}, which no earlier -A line adds")
            reals[key].append(_real(line, services[key], notes))
        else:
            raise ConfigError(where, f"{command}: ipvsadm -Sn output has only -A and -a lines")
    servers = tuple(_imported(svc, reals[key], notes) for key, svc in services.items())
    return Result(servers, tuple(notes))


def _show(key: tuple[Protocol, IPAddress, int]) -> str:
    proto, address, port = key
    return f"{proto.name} [{address}]:{port}" if address.version == 6 else f"{proto.name} {address}:{port}"


def _service(line: _Line, key: tuple[Protocol, IPAddress, int], notes: list[Note]) -> _Service:
    svc = _Service(line.where, *key)
    full_mask = "255.255.255.255" if key[1].version == 4 else "128"
    for option, value in line.options[1:]:
        if option in SERVICE_OPTIONS:
            continue
        if option in ("-s", "--scheduler"):
            assert value is not None
            svc = replace(svc, scheduler=value)
        elif option in ("-p", "--persistent"):
            timeout = _number(value, line.where, "timeout", 2**32 - 1) if value is not None else DEFAULT_PERSISTENCE
            svc = replace(svc, persistence=timeout)
        elif option in ("-M", "--netmask"):
            if value not in (full_mask, "ffffffff", "/32" if key[1].version == 4 else "/128"):
                notes.append(Note(line.where, f"-M {value}: ipvsctl's persistence is per client address"))
        elif option in ("-b", "--sched-flags"):
            assert value is not None
            svc = replace(svc, flags=tuple(f for f in value.split(",") if f))
        elif option in ("-o", "--ops"):
            notes.append(Note(line.where, f"{option}: ipvsctl has no one-packet scheduling"))
        elif option in ("--pe", "--persistence-engine"):
            notes.append(Note(line.where, f"{option} {value}: ipvsctl has no persistence engines"))
        else:
            raise ConfigError(line.where, f"{option}: not an option of -A")
    return svc


def _real(line: _Line, svc: _Service, notes: list[Note]) -> tuple[Real, Forward]:
    """The real server of an ``-a`` line, and its forwarding method."""
    real: tuple[IPAddress, int] | None = None
    weight = 1
    forward = Forward.ROUTE  # ipvsadm's default
    for option, value in line.options[1:]:
        if option in SERVICE_OPTIONS:
            continue
        if option in ("-r", "--real-server"):
            assert value is not None
            real = _endpoint(value, line.where, svc.port)
        elif option in FORWARD_OPTIONS:
            forward = FORWARD_OPTIONS[option]
        elif option in ("-w", "--weight"):
            weight = _number(value, line.where, "weight", 2**31 - 1)
        elif option in ("-x", "--u-threshold", "-y", "--l-threshold"):
            if _number(value, line.where, "threshold", 2**31 - 1) != 0:
                notes.append(Note(line.where, f"{option} {value}: ipvsctl sets no connection thresholds"))
        elif option in ("--tun-type", "--tun-port", "--tun-nocsum", "--tun-csum", "--tun-remcsum"):
            if not (option == "--tun-type" and value == "ipip"):
                notes.append(Note(line.where, f"{option}: ipvsctl tunnels with ipip only"))
        else:
            raise ConfigError(line.where, f"{option}: not an option of -a")
    if real is None:
        raise ConfigError(line.where, "-a needs -r ADDRESS:PORT")
    if weight > MAX_WEIGHT:
        notes.append(Note(line.where, f"weight {weight}: at most {MAX_WEIGHT}; set to that"))
        weight = MAX_WEIGHT
    return Real(real[0], real[1], weight, line.where), forward


def _imported(svc: _Service, given: list[tuple[Real, Forward]], notes: list[Note]) -> Imported:
    forward = given[0][1] if given else Forward.MASQ
    reals: list[Real] = []
    weights: dict[IPAddress, Real] = {}
    seen: set[tuple[IPAddress, int]] = set()
    for real, method in given:
        if method != forward:
            alike = f"ipvsctl forwards to all real servers of a Service alike; {FORWARD_NAMES[forward]} is used"
            notes.append(Note(real.where, f"{FORWARD_NAMES[method]}: {alike}"))
        if real.address.version != svc.address.version:
            notes.append(Note(real.where, f"{real.address} is of another family than its virtual server; left out"))
            continue
        if forward != Forward.MASQ:
            real = replace(real, port=svc.port)  # as ipvsadm does: packets to a dr/tunnel server keep their port
        if (real.address, real.port) in seen:
            notes.append(Note(real.where, f"real server {real.address} port {real.port} is given twice; left out"))
            continue
        first = weights.setdefault(real.address, real)
        if first.weight != real.weight:
            notes.append(Note(real.where, f"weight {real.weight}: ipvsctl weighs an address once, and "
                                          f"{real.address} has weight {first.weight} at {first.where}; "
                                          "that is used"))  # fmt: skip
            real = replace(real, weight=first.weight)
        seen.add((real.address, real.port))
        reals.append(real)
    scheduler = svc.scheduler
    flags: list[str] = []
    for flag in svc.flags:
        name = f"{scheduler}-{FLAG_ALIASES[flag]}" if flag in FLAG_ALIASES and scheduler in ("sh", "mh") else flag
        if name not in SCHEDULER_FLAGS or not name.startswith(scheduler + "-"):
            notes.append(Note(svc.where, f"-b {flag}: ipvsctl has no such flag for scheduler {scheduler}"))
        elif name not in flags:
            flags.append(name)
    persistence = svc.persistence or None
    if persistence is not None and persistence > MAX_PERSISTENCE:
        notes.append(Note(svc.where, f"-p {persistence}: at most {MAX_PERSISTENCE} s; set to that"))
        persistence = MAX_PERSISTENCE
    return Imported(
        where=svc.where,
        protocol=svc.protocol,
        address=svc.address,
        port=svc.port,
        scheduler=scheduler,
        scheduler_flags=tuple(sorted(flags)),
        persistence=persistence,
        forward=forward,
        reals=tuple(reals),
    )
