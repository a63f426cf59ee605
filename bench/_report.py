"""Shared output of the benchmarks: percentiles, a table on stdout, JSON under bench/results/.

Every scenario reports :class:`Figure` rows — a measured value with its target beside it — via
:func:`report_figures`; ``bench.run_all`` gathers them into one summary table.
"""

from __future__ import annotations

import json
import math
import os
import platform
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

RESULTS = Path(
    os.environ.get("ASTARA_BENCH_RESULTS") or Path(__file__).resolve().parent / "results"
)


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0–100) by nearest rank; values need not be sorted."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]


def summary_ms(samples: Sequence[float]) -> dict[str, float]:
    return {
        "n": len(samples),
        "p50_ms": round(percentile(samples, 50) * 1000, 2),
        "p90_ms": round(percentile(samples, 90) * 1000, 2),
        "p99_ms": round(percentile(samples, 99) * 1000, 2),
        "max_ms": round(max(samples) * 1000, 2) if samples else float("nan"),
    }


def machine() -> dict[str, Any]:
    """CPU model and count, RAM, kernel and Python of this machine (from /proc and platform)."""
    cpu_model, cpus = platform.processor() or platform.machine(), os.cpu_count() or 0
    try:
        with open("/proc/cpuinfo") as f:
            lines = f.read().splitlines()
        models = [ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("model name")]
        cpus = sum(1 for ln in lines if ln.startswith("processor")) or cpus
        cpu_model = models[0] if models else cpu_model
    except OSError:
        pass
    ram_gib = float("nan")
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    ram_gib = round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    return {
        "cpu": cpu_model,
        "cpus": cpus,
        "cpus_usable": len(os.sched_getaffinity(0)),
        "ram_gib": ram_gib,
        "kernel": platform.release(),
        "os": platform.system(),
        "python": platform.python_version(),
        "python_impl": platform.python_implementation(),
    }


def _save(name: str, doc: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(doc, indent=2, default=str))
    try:
        shown = path.relative_to(Path.cwd())
    except ValueError:
        shown = path
    print(f"saved {shown}")
    return path


def _table(columns: list[str], rows: list[dict[str, Any]]) -> None:
    widths = {c: max(len(c), *(len(str(r.get(c, ""))) for r in rows)) for c in columns}
    print("  ".join(c.ljust(widths[c]) for c in columns))
    for row in rows:
        print("  ".join(str(row.get(c, "")).ljust(widths[c]) for c in columns))


def report(name: str, rows: list[dict[str, Any]], params: dict[str, Any]) -> Path:
    """Print ``rows`` as a table and save them with the machine and parameters as JSON."""
    _table(list(dict.fromkeys(key for row in rows for key in row)), rows)
    return _save(
        name,
        {
            "benchmark": name,
            "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "machine": machine(),
            "params": params,
            "rows": rows,
        },
    )


@dataclass
class Figure:
    """One measured figure and its target: ``value`` (None: not measured) ``op`` ``limit``.

    ``target`` is the text shown (defaults to ``"<op> <limit> <unit>"``); no ``limit`` means no
    target (shown as "—", met "n/a"). ``note`` says under which conditions it was measured.
    """

    name: str
    value: float | None
    unit: str = ""
    limit: float | None = None
    op: str = "<="
    target: str = ""
    note: str = ""

    def __post_init__(self) -> None:
        if self.value is not None and isinstance(self.value, float) and math.isnan(self.value):
            self.value = None
        if not self.target:
            self.target = (
                "—"
                if self.limit is None
                else f"{'≤' if self.op == '<=' else '<'} {_num(self.limit)} {self.unit}".strip()
            )

    @property
    def met(self) -> str:
        if self.limit is None:
            return "n/a"
        if self.value is None:
            return "no (not measured)"
        ok = self.value <= self.limit if self.op == "<=" else self.value < self.limit
        return "yes" if ok else "NO"

    @property
    def measured(self) -> str:
        return "—" if self.value is None else f"{_num(self.value)} {self.unit}".strip()

    def row(self) -> dict[str, Any]:
        return {
            "figure": self.name,
            "measured": self.measured,
            "target": self.target,
            "met?": self.met,
            "note": self.note,
        }

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "met": self.met}


def _num(value: float) -> str:
    if value == 0 or abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    if abs(value) >= 1:
        return f"{value:.2f}"
    return f"{value:.3g}"


def print_figures(title: str, figures: Sequence[Figure]) -> None:
    print(f"\n== {title}")
    _table(["figure", "measured", "target", "met?", "note"], [f.row() for f in figures])


def report_figures(
    name: str,
    figures: Sequence[Figure],
    params: dict[str, Any],
    details: dict[str, Any] | None = None,
) -> Path:
    """Print the figures as "figure | measured | target | met?" and save them as JSON."""
    print_figures(name, figures)
    return _save(
        name,
        {
            "benchmark": name,
            "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "machine": machine(),
            "params": params,
            "figures": [f.to_json() for f in figures],
            "details": details or {},
        },
    )


def load_figures(name: str) -> list[Figure]:
    """The figures a scenario saved (empty if it has not run)."""
    path = RESULTS / f"{name}.json"
    if not path.exists():
        return []
    doc = json.loads(path.read_text())
    fields = {"name", "value", "unit", "limit", "op", "target", "note"}
    return [Figure(**{k: v for k, v in f.items() if k in fields}) for f in doc.get("figures", [])]
