"""The test API server holding the rule set, in a process of its own: ``python -m ipvsctl.bench.apiserver N``.

It is ``tests/fakeapi.py`` (LIST with resourceVersion and ``limit``/``continue`` chunking, WATCH
from a resourceVersion), so it runs only from the repository, with its root on ``sys.path``
(scripts/bench passes ``PYTHONPATH``). It loads the benchmark's N Services and their
EndpointSlices (and a Node), forgets the history of those loads (``compact``: a watch from
before them is answered 410 Gone, and a watch's scan of the event log stays as short at 10,000
Services as at 100), prints one JSON line ``{"url": …, "resource_version": …}`` and then takes
one JSON command a line on stdin, answering each with one JSON line on stdout:

- ``{"slice": I, "not_ready": [K, …]}``: Service I's EndpointSlice with those endpoints not ready;
  answers ``{"applied": T}``, T the ``time.monotonic()`` (CLOCK_MONOTONIC, the same clock in
  every process on the machine) just after the server holds the change;
- ``{"requests": true}``: the LIST and WATCH requests so far, per resource path;
- end of input: the server stops.

A process of its own, so that serving does not share the benchmark's interpreter (and its GIL)
with the kernel polling.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

from ipvsctl.bench import rules

NODE_NAME = "bench-node"
NODE_ADDRESS = "192.0.2.1"  # TEST-NET-1: only a Node's status; nothing is sent to it


def request_summary(requests: list[Any]) -> dict[str, dict[str, int]]:
    """Per path: LIST requests, how many carried ``limit`` and ``continue``, and WATCH requests."""
    out: dict[str, dict[str, int]] = {}
    for r in requests:
        entry = out.setdefault(r.path, {"list": 0, "limit": 0, "continue": 0, "watch": 0})
        if r.watch:
            entry["watch"] += 1
            continue
        entry["list"] += 1
        entry["limit"] += "limit" in r.params
        entry["continue"] += "continue" in r.params
    return out


def serve(count: int) -> int:
    try:
        from tests import fakeapi
    except ImportError as err:
        print(json.dumps({"error": f"tests.fakeapi is not importable ({err}); run from the repository"}), flush=True)
        return 2
    services = rules.rule_set(count)
    with fakeapi.FakeApi() as api:
        api.apply(fakeapi.NODES, fakeapi.node(NODE_NAME, NODE_ADDRESS))
        for svc in services:
            api.apply(fakeapi.SERVICES, rules.service_object(svc))
            api.apply(fakeapi.ENDPOINT_SLICES, rules.endpoint_slice_object(svc))
        rv = api.compact()
        api.requests.clear()
        print(json.dumps({"url": api.url, "resource_version": str(rv)}), flush=True)
        for line in sys.stdin:
            command = json.loads(line)
            if "slice" in command:
                svc = services[int(command["slice"])]
                api.apply(fakeapi.ENDPOINT_SLICES, rules.endpoint_slice_object(svc, command.get("not_ready", ())))
                answer: dict[str, Any] = {"applied": time.monotonic()}
            elif "requests" in command:
                with api.lock:
                    answer = {"requests": request_summary(list(api.requests))}
            else:
                answer = {"error": f"unknown command {command!r}"}
            print(json.dumps(answer), flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1 or not args[0].isdigit():
        print("usage: python -m ipvsctl.bench.apiserver N", file=sys.stderr)
        return 2
    return serve(int(args[0]))


if __name__ == "__main__":
    sys.exit(main())
