"""`ipvsctl agent`: wire a source, the World, the engine, the loop, metrics and signals together.

The agent holds the state lock for its whole life: a second agent, or an `ipvsctl apply`
meant for the same state directory, waits --lock-timeout and then fails clearly (exit 6).
SIGTERM and SIGINT stop it and leave IPVS exactly as it is (the next start adopts its own
record and writes nothing if nothing changed); SIGHUP reads the config file again.
"""

from __future__ import annotations

import gc
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any, Protocol

from ipvsctl import logs
from ipvsctl.errors import LockBusy, StateError
from ipvsctl.kernel.base import Kernel, KernelUnavailable
from ipvsctl.model.desired import Owner
from ipvsctl.model.ipvs import VirtualServerState
from ipvsctl.settings import DEFAULT_SYSCTLS, Settings
from ipvsctl.state import Store

from .config import AgentConfig, ConfigError, build
from .engine import Engine
from .http import serve
from .loop import Agent, Timing
from .metrics import Metrics
from .signals import relayed
from .world import World

log = logs.get()

EXIT_USAGE, EXIT_UNAVAILABLE, EXIT_STATE = 2, 5, 6


class Source(Protocol):
    def start(self) -> None: ...
    def join(self, timeout: float = 5.0) -> None: ...


def _error(message: str) -> None:
    """One line on stderr, as the CLI's ``fail`` prints it (this module runs without typer)."""
    sys.stdout.flush()
    sys.stderr.write(message + "\n")
    sys.stderr.flush()


def settings_of(cfg: AgentConfig, state_dir: Path) -> Settings:
    extra: dict[str, Any] = {"node_name": cfg.node_name} if cfg.node_name else {}
    return Settings(
        node_ips=cfg.node_ip,
        scheduler=cfg.scheduler,
        interface=cfg.interface,
        state_dir=state_dir,
        set_sysctls=cfg.sysctls,
        adopt=cfg.adopt,
        drain_timeout=cfg.drain_timeout,
        lock_timeout=cfg.lock_timeout,
        **extra,
    )


def timing_of(cfg: AgentConfig) -> Timing:
    return Timing(cfg.min_sync_period, cfg.sync_period, cfg.drain_check)


def make_source(
    cfg: AgentConfig, world: World, stop: threading.Event, node_name: str | None, state_dir: Path | None = None
) -> Source:
    if cfg.manifests:
        from ipvsctl.cache import ParseCache
        from ipvsctl.sources.directory import SOURCE, DirectorySource

        world.expect(SOURCE)
        cache = ParseCache(state_dir / "cache") if state_dir is not None else None
        return DirectorySource(cfg.manifests, world, stop, cache=cache)
    from ipvsctl.sources.kube.client import Client
    from ipvsctl.sources.kube.config import load_config
    from ipvsctl.sources.kube.source import SOURCE as KUBE
    from ipvsctl.sources.kube.source import KubeSource

    world.expect(KUBE)
    return KubeSource(Client(load_config(cfg.kubeconfig)), world, node_name, stop)


def stats_source(
    engine: Engine, open_kernel: Callable[[], Kernel]
) -> Callable[[], Iterator[tuple[Owner, VirtualServerState]]]:
    """Per-virtual-server counters read fresh at scrape time on a separate netlink socket
    (virtual servers only: one dump), with real servers as the engine last saw them."""

    def read() -> Iterator[tuple[Owner, VirtualServerState]]:
        owners = engine.owned.services
        cached = engine.observed
        kernel = open_kernel()
        try:
            states = kernel.dump(reals=False)
        finally:
            kernel.close()
        for state in states:
            owner = owners.get(state.server.key)
            if owner is not None:
                last = cached.get(state.server.key)
                yield owner, replace(state, real_servers=last.real_servers if last else ())

    return read


def run(config_file: Path | None, flags: dict[str, Any], state_dir: Path, open_kernel: Callable[[], Kernel]) -> int:
    """Run the agent until SIGTERM/SIGINT; return the exit code."""
    try:
        cfg = build(config_file, flags)
    except ConfigError as err:
        _error(f"error: {err}")
        return EXIT_USAGE
    settings = settings_of(cfg, state_dir)
    stop = threading.Event()
    world = World()
    try:
        kernel = open_kernel()
    except KernelUnavailable as err:
        _error(f"error: {err}")
        return EXIT_UNAVAILABLE
    store = Store(state_dir)
    collecting = gc.isenabled()  # the start turns the collector off for a while (Agent.collector_paused)
    try:
        with store.locked(cfg.lock_timeout):
            return _run_locked(cfg, config_file, flags, settings, kernel, store, world, stop, open_kernel)
    except (LockBusy, StateError) as err:
        _error(f"error: {err}")
        return EXIT_STATE
    except KernelUnavailable as err:
        _error(f"error: {err}")
        return EXIT_UNAVAILABLE
    finally:
        kernel.close()
        if collecting:
            gc.enable()


def _run_locked(
    cfg: AgentConfig,
    config_file: Path | None,
    flags: dict[str, Any],
    settings: Settings,
    kernel: Kernel,
    store: Store,
    world: World,
    stop: threading.Event,
    open_kernel: Callable[[], Kernel],
) -> int:
    engine = Engine(kernel, store, settings, world)
    from ipvsctl.sources.kube.config import KubeConfigError

    try:
        source = make_source(cfg, world, stop, settings.node_name, settings.state_dir)
    except KubeConfigError as err:  # names the file and the field
        _error(f"error: {err}")
        return EXIT_USAGE
    kernel.bound_addresses()  # connects now, so the first sync's time is its own
    if settings.set_sysctls:
        changed = kernel.set_sysctls(DEFAULT_SYSCTLS)
        if changed:
            log.info("sysctls set", **changed)
    paused = gc.isenabled()
    gc.disable()  # until the first full sync: see Agent.collector_paused
    if cfg.manifests:
        from ipvsctl.sources.directory import DirectorySource

        assert isinstance(source, DirectorySource)
        source.prime()  # every manifest parsed on every CPU, before any thread starts
    metrics = Metrics()
    engine.on_flush = metrics.count_conntrack_flushed
    checker = None
    if cfg.manifests:  # health checks are the standalone agent's; with --kubernetes, the kubelet's
        from ipvsctl.checks.report import FILE as HEALTH_FILE
        from ipvsctl.checks.runner import Checker

        checker = Checker(
            lambda ref: world.touch((ref,)),
            on_result=lambda _ref, _target, kind, healthy, took: metrics.observe_check(kind, healthy, took),
            on_state=lambda ref, target, healthy: metrics.set_check_state(ref, target[0], target[1], healthy),
            report_path=store.directory / HEALTH_FILE,
        )
        engine.checks = checker
        engine.check_defaults = dict(cfg.health_check_defaults)
    else:
        engine.warn_checks = True
    metrics.set_stats_source(stats_source(engine, open_kernel))
    agent = Agent(engine, world, metrics, timing_of(cfg), stop, collector_paused=paused)
    server = None
    if cfg.metrics_address:
        try:
            server = serve(cfg.metrics_address, metrics, lambda: agent.status, cfg.sync_period)
        except OSError as err:
            _error(f"error: cannot listen on {cfg.metrics_address}: {err.strerror}")
            return EXIT_USAGE

    def on_stop(sig: signal.Signals) -> None:
        log.info("stopping; IPVS is left as it is", signal=sig.name)
        stop.set()

    def on_hup(_sig: signal.Signals) -> None:
        try:
            new = build(config_file, flags)
        except ConfigError as err:
            log.error("reload failed; keeping the running configuration", error=str(err))
            return
        fixed = ("manifests", "kubernetes", "kubeconfig", "interface", "metrics_address")
        for name in fixed:
            if getattr(new, name) != getattr(cfg, name):
                log.warning("option needs a restart to change", option=name.replace("_", "-"))
        if engine.checks is not None:
            engine.check_defaults = dict(new.health_check_defaults)  # the reload's resync applies them
        agent.reload(
            settings_of(replace(new, **{n: getattr(cfg, n) for n in fixed}), settings.state_dir), timing_of(new)
        )
        log.info("configuration reloaded")

    handlers = {signal.SIGTERM: on_stop, signal.SIGINT: on_stop, signal.SIGHUP: on_hup}
    with relayed(handlers):
        log.info(
            "agent started",
            source="manifests" if cfg.manifests else "kubernetes",
            owned_virtual_servers=len(engine.owned.services),
            metrics=f"http://{cfg.metrics_address}/metrics" if server else None,
        )
        try:
            source.start()
            agent.run()
        finally:
            stop.set()
            source.join()
            if checker is not None:
                checker.close()
            if server is not None:
                server.close()
    log.info("agent stopped")
    return 0
