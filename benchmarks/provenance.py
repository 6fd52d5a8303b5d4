"""Where a benchmark number came from: one helper every benchmark script puts at the top of its JSON.

``provenance(args)`` returns the command line, the parsed arguments, the git commit (and whether the
tree had uncommitted changes), the machine and the date. ``tests/test_benchmark_results.py`` checks that
every committed result carries these keys.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

REQUIRED_KEYS = ("command", "arguments", "commit", "machine", "date")


def _git(*args: str) -> str | None:
    try:
        done = subprocess.run(["git", *args], capture_output=True, text=True, check=True,
                              cwd=Path(__file__).resolve().parent)
    except (OSError, subprocess.CalledProcessError):
        return None
    return done.stdout.strip()


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _ram_gib() -> float | None:
    try:
        return round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        return None


def machine() -> dict[str, Any]:
    import torch

    return {
        "cpu": _cpu_model(), "cores": os.cpu_count(), "ram_gib": _ram_gib(), "os": platform.platform(),
        "python": platform.python_version(), "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
        "host": platform.node(), "load_average": list(os.getloadavg()),
    }


def provenance(args: argparse.Namespace) -> dict[str, Any]:
    """The five keys of REQUIRED_KEYS, for the top of a benchmark's JSON."""
    status = _git("status", "--porcelain", "--untracked-files=no")
    return {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "arguments": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "commit": {"sha": _git("rev-parse", "HEAD"), "dirty": bool(status) if status is not None else None},
        "machine": machine(),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }
