"""``python -m ipvsctl.bench.hostversion``: time ``ipvsctl version`` as a whole process on this
host, and print the seconds comma-separated (scripts/bench passes them into the VM's run).

Its floor (≤ 0.1 s) is set for a host; under the VM's emulation process start-up is ten times
slower and says nothing about one. One untimed run first, so the page cache holds the modules.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

REPEATS = 5


def command() -> list[str]:
    found = shutil.which("ipvsctl") or str(Path(sys.executable).with_name("ipvsctl"))
    return [found] if Path(found).exists() else [sys.executable, "-m", "ipvsctl"]


def main() -> int:
    argv = [*command(), "version"]
    samples: list[float] = []
    for i in range(REPEATS + 1):
        started = time.perf_counter()
        proc = subprocess.run(argv, capture_output=True, check=False)
        elapsed = time.perf_counter() - started
        if proc.returncode != 0:
            print(f"{' '.join(argv)} exited {proc.returncode}", file=sys.stderr)
            return 1
        if i:
            samples.append(elapsed)
    print(",".join(f"{s:.4f}" for s in samples))
    return 0


if __name__ == "__main__":
    sys.exit(main())
