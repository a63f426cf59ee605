"""Console: the web console in headless Chromium at N routers (Debian's chromium, driven by
Playwright; ``make browser-deps``).

- first paint: a fresh page load of ``/`` (no cache) until its first page of rows is painted
  (the page's ``astara:fleet-painted`` mark, after the frame that showed them), measured
  ``--loads`` times;
- state change → screen: ``PUT /router/debug/<id>`` (then ``/router/manage/<id>``) on the HTTP
  API for a router on the page on screen, until that row shows the change (a MutationObserver in
  the page notes the wall-clock time): the command's trip over the bus, the orchestrator's
  status board, the API's live feed (``/events``; a page polling an API without it shows that
  here) and the browser's frame, ``--changes`` times.

Targets ≤ 1 s each (issue 16).

    python -m bench.console [--routers 1000] [--loads 5] [--changes 10]
    python -m bench.console --routers 10000
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

import requests

from . import scale
from ._harness import Deployment, log
from ._report import Figure, percentile, report_figures

TARGET_S = 1.0

# Notes (once per change) the wall-clock time the row of ``router`` shows its debug flag as
# ``want`` ("on", "off"); the bench reads ``window.benchSeen``.
_WATCH = """([router, want]) => {
  window.benchSeen = null;
  const check = () => {
    const row = document.querySelector(`tr[data-router="${router}"]`);
    if (window.benchSeen === null && row && row.dataset.debug === want) {
      window.benchSeen = Date.now() / 1000;
    }
  };
  if (window.benchObserver) window.benchObserver.disconnect();
  window.benchObserver = new MutationObserver(check);
  window.benchObserver.observe(document.querySelector("#routers tbody"),
                               {subtree: true, childList: true, attributes: true});
  check();
}"""


# Where a load's time went (ms from navigation start): the document and app.js arrived, the
# script ran (DOMContentLoaded), the first GET /routers was sent and answered.
_BREAKDOWN = """() => {
  const nav = performance.getEntriesByType("navigation")[0];
  const res = performance.getEntriesByType("resource");
  const find = (part) => res.find((r) => r.name.includes(part));
  const routers = find("/routers?") || find("/routers");
  const script = find("app.js");
  return {
    document_ms: nav ? nav.responseEnd : null,
    script_ms: script ? script.responseEnd : null,
    dom_ready_ms: nav ? nav.domContentLoadedEventEnd : null,
    routers_sent_ms: routers ? routers.startTime : null,
    routers_answered_ms: routers ? routers.responseEnd : null,
    painted_ms: performance.getEntriesByName("astara:fleet-painted")[0].startTime,
  };
}"""


def first_paint(page: Any, url: str, loads: int) -> dict[str, Any]:
    """Seconds from navigation start to the first page of rows painted, ``loads`` times, with
    the slowest load's breakdown."""
    samples: list[float] = []
    breakdowns: list[dict[str, Any]] = []
    for _ in range(loads):
        page.goto("about:blank")
        page.goto(url, wait_until="commit")
        page.wait_for_function(
            "performance.getEntriesByName('astara:fleet-painted').length > 0", timeout=60_000
        )
        parts = page.evaluate(_BREAKDOWN)
        breakdowns.append({k: (round(v) if v is not None else None) for k, v in parts.items()})
        samples.append(parts["painted_ms"] / 1000)
    rows = page.locator("#routers tbody tr[data-router]").count()
    slowest = breakdowns[samples.index(max(samples))] if samples else {}
    return {**_stats(samples), "rows_in_dom": rows, "slowest": slowest, "loads": breakdowns}


def change_to_screen(page: Any, api: str, changes: int) -> dict[str, Any]:
    """Seconds from ``PUT /router/debug|manage/<id>`` to the row showing it."""
    http = requests.Session()
    http.trust_env = False
    routers = page.eval_on_selector_all(
        "#routers tbody tr[data-router]", "rows => rows.map(r => r.dataset.router)"
    )
    samples: list[float] = []
    missed = 0
    live = page.locator("#live .text").text_content()
    for i in range(changes):
        router = routers[i % len(routers)]
        for verb, want in (("debug", "on"), ("manage", "off")):
            page.evaluate(_WATCH, [router, want])
            t0 = time.time()
            http.put(
                f"{api}/router/{verb}/{router}", json={"reason": "bench.console"}, timeout=30
            ).raise_for_status()
            try:
                page.wait_for_function("window.benchSeen !== null", timeout=30_000)
            except Exception:  # noqa: BLE001 - a change never shown is a result
                missed += 1
                continue
            samples.append(page.evaluate("window.benchSeen") - t0)
    return {**_stats(samples), "missed": missed, "feed": live}


def _breakdown_note(parts: dict[str, Any]) -> str:
    """'GET /routers 120 → 610 ms' and the rest, for the slowest load."""
    if not parts:
        return "—"
    return (
        f"document {parts['document_ms']} ms, script run {parts['dom_ready_ms']} ms, "
        f"GET /routers {parts['routers_sent_ms']} → {parts['routers_answered_ms']} ms, "
        f"painted {parts['painted_ms']} ms"
    )


def _stats(samples: list[float]) -> dict[str, Any]:
    return {
        "n": len(samples),
        "p50_s": round(percentile(samples, 50), 3) if samples else None,
        "p99_s": round(percentile(samples, 99), 3) if samples else None,
        "max_s": round(max(samples), 3) if samples else None,
    }


def run(dep: Deployment, args: argparse.Namespace) -> tuple[list[Figure], dict[str, Any]]:
    from astara_actors.testing.browser import chromium, chromium_missing

    orch = dep.orchestrator
    assert orch is not None
    n = len(dep.router_ids)
    reason = chromium_missing()
    if reason or not orch.wait_api(60):
        why = reason or "the HTTP API did not answer"
        return [
            Figure("first paint at N (p50)", None, "s", TARGET_S, note=why),
            Figure("state change → screen at N (p99)", None, "s", TARGET_S, note=why),
        ], {"error": why}
    details: dict[str, Any] = {}
    with chromium() as browser:
        # bypass_csp: the page forbids eval, which Playwright's wait_for_function polls with.
        context = browser.new_context(viewport={"width": 1280, "height": 800}, bypass_csp=True)
        page = context.new_page()
        log(f"console: first paint, {args.loads} loads")
        details["first_paint"] = paint = first_paint(page, f"{orch.api_url}/", args.loads)
        log(f"console: state change → screen, {args.changes} changes")
        details["change"] = change = change_to_screen(page, orch.api_url, args.changes)
        context.close()
    figures = [
        Figure(
            "first paint at N (p50)",
            paint["p50_s"],
            "s",
            TARGET_S,
            note=f"{n} routers, {paint['rows_in_dom']} rows in the page; "
            f"max {paint['max_s']} s over {paint['n']} loads; slowest: "
            + _breakdown_note(paint["slowest"]),
        ),
        Figure(
            "state change → screen at N (p99)",
            change["p99_s"],
            "s",
            TARGET_S,
            note=f"PUT /router/debug|manage → row shows it; p50 {change['p50_s']} s over "
            f"{change['n']} changes, feed: {change['feed']}"
            + (f"; {change['missed']} never shown" if change["missed"] else ""),
        ),
    ]
    return figures, details


def add_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--loads", type=int, default=5, help="page loads timed (default 5)")
    parser.add_argument(
        "--changes", type=int, default=10, help="debug/manage pairs timed (default 10)"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    scale.add_args(parser)
    add_args(parser)
    args = parser.parse_args(argv)
    with scale.deployment(args, api=True) as dep:
        up = scale.bring_up_checked(dep, args)
        figures, details = run(dep, args)
    report_figures(
        "console",
        figures,
        {**scale.params(args), "loads": args.loads, "changes": args.changes},
        {"bring_up": up, **details},
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
