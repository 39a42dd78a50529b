"""One pass of a one-shot command (`apply`, `diff`, `cleanup`): read the kernel, translate the
manifests (from the caches when nothing changed), sync. No CLI framework and no logging library
is imported here, so `ipvsctl diff` can run without them (``quick.py``); ``cli.py`` and
``quick.py`` turn what this raises into messages and exit codes."""

from __future__ import annotations

import gc
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

from ipvsctl import readcache
from ipvsctl.apply import Result, observe, sync
from ipvsctl.cache import ParseCache, TranslationCache
from ipvsctl.kernel.base import Kernel
from ipvsctl.model.desired import Desired
from ipvsctl.model.ipvs import address_sort_key
from ipvsctl.plan import Observed
from ipvsctl.settings import Settings
from ipvsctl.sources.files import load, load_inputs, read_inputs
from ipvsctl.state import Store
from ipvsctl.translate import translate

# Where cache notes go: (level, event, reason). The CLI logs them; quick.py too, importing the
# logging set-up only when there is something to say.
Notes = Callable[[str, str, str], None]


@contextmanager
def collector_paused() -> Iterator[None]:
    """Python's cycle collector off for one pass of a one-shot command (apply, diff, validate).

    Reading, translating and planning 10,000 Services allocates millions of objects that all
    live to the end, and the collector's full passes walk them again and again (on the host,
    ``plan`` at 10,000 took 0.93 s with it and 0.28 s without) to find almost nothing: 477
    objects in cycles over that whole run. The agent, which runs for months, keeps it."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def translated(files: list[str], settings: Settings, notes: Notes, *, cache_dir: Path | None) -> Desired:
    """The manifests translated; with a ``cache_dir``, the last run's translation when no file and
    no setting changed, and unchanged files from the parse cache otherwise (docs/operations.md)."""
    if cache_dir is None:
        return translate(load(files), settings)
    parse_cache = ParseCache(cache_dir)
    translations = TranslationCache(cache_dir, parse_cache.code)
    inputs = read_inputs(files)
    key = translations.key(inputs.digest, settings)
    desired = translations.get(key)
    if not isinstance(desired, Desired):
        desired = translate(load_inputs(inputs, parse_cache), settings)
        parse_cache.save()
        translations.put(key, desired)
    for note in parse_cache.notes + translations.notes:
        notes("warning", "cache ignored", note)
    for unsaved in (parse_cache.unsaved, translations.unsaved):
        if unsaved:
            notes("debug", "cache not written", unsaved)
    return desired


@collector_paused()
def reconcile(
    files: list[str] | None,
    settings: Settings,
    kernel: Kernel,
    notes: Notes,
    *,
    dry_run: bool,
    cache_dir: Path | None,
) -> tuple[Desired, Result]:
    """Translate the files (None: nothing is desired, as in cleanup) and sync the kernel to them.
    Raises StateError when the ownership record cannot be used."""
    started = time.perf_counter()
    if dry_run and cache_dir is not None and files is not None:
        # diff: translate first, so that real servers the kernel shows unchanged come from the
        # kernel-read cache packed as the translation's own (readcache.py)
        local = frozenset(kernel.node_addresses())
        if not settings.node_ips:
            settings = replace(settings, node_ips=tuple(sorted(local, key=address_sort_key)))
        desired = translated(files, settings, notes, cache_dir=cache_dir)
        read = time.perf_counter()
        found: list[str] = []
        services = readcache.read(kernel, cache_dir, found, desired.services.get)
        for note in found:
            notes(*(("debug", "cache not written") if " not written" in note else ("warning", "cache ignored")), note)
        if services is not None:
            observed = Observed(services, frozenset(kernel.bound_addresses()), local)
        else:
            observed = observe(kernel)
        seconds = {"manifests": read - started, "kernel read": time.perf_counter() - read}
    else:
        observed = observe(kernel)  # read once: it also gives the default node addresses
        read = time.perf_counter()
        if files is None:
            desired = Desired()
        else:
            if not settings.node_ips:
                settings = replace(settings, node_ips=tuple(sorted(observed.local, key=address_sort_key)))
            desired = translated(files, settings, notes, cache_dir=cache_dir)
        seconds = {"kernel read": read - started, "manifests": time.perf_counter() - read}
    result = sync(desired, kernel, Store(settings.state_dir), settings, dry_run=dry_run, observed=observed)
    return desired, replace(result, seconds={**seconds, **result.seconds})
