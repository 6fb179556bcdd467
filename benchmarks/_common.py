"""Shared plumbing for the benchmark scripts: result rows and the JSON file of DESIGN.md."""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import sys
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def machine() -> str:
    """A one-line description of this machine."""
    return (f"{os.cpu_count()} cores, {platform.machine()}, {platform.system()}, "
            f"Python {platform.python_version()}")


def row(dataset: str, method: str, setting: str, metric: str, value: float,
        stderr: float | None = None, seconds: float | None = None) -> dict:
    """One table row (names per DESIGN.md: probkit methods start with ``probkit-``)."""
    return {"dataset": dataset, "method": method, "setting": setting, "metric": metric,
            "value": float(value), "stderr": None if stderr is None else float(stderr),
            "seconds": None if seconds is None else float(seconds)}


def write_results(name: str, rows: list[dict], quick: bool = False, **extra) -> Path:
    """Write ``benchmarks/results/<name>.json`` (``<name>_quick.json`` for ``--quick`` runs)."""
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / (f"{name}_quick.json" if quick else f"{name}.json")
    doc = {"benchmark": name, "command": "python " + " ".join(sys.argv),
           "date": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
           "machine": machine(), "rows": rows, **extra}
    path.write_text(json.dumps(doc, indent=1))
    print(f"wrote {path}")
    return path
