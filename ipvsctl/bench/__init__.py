"""The benchmark: ipvsctl against ipvsadm and keepalived on one rule set, at 100 to 10,000 Services.

- ``rules``: the rule set and its three spellings (manifests, ``ipvsadm -R`` input, keepalived
  config), pure;
- ``results``: the measured values and their JSON form;
- ``floors``: the targets from the issue, checked against a set of results;
- ``measure``: the measurements themselves, run as root on a kernel with IPVS;
- ``run``: the guest-side entry point (``python -m ipvsctl.bench.run``);
- ``report`` and ``svg``: tables for docs/performance.md and the log-log plot.

``scripts/bench`` runs it all: the test VM once, then the renderer on the host.
"""
