"""The load test's report: one JSON document, a live line per second, a final table."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from dispatcher.loadtest.stats import Recorder, RequestOutcome, latency_summary
from dispatcher.loadtest.thresholds import Threshold, evaluate

if TYPE_CHECKING:
    from dispatcher.loadtest.settings import LoadTest


def build_loadtest_report(
    test: LoadTest,
    recorder: Recorder,
    *,
    target_url: str,
    window: float,
    elapsed: float,
    late_starts: int,
    aborted: str | None,
    interrupted: bool,
    version: str,
    quota: dict[str, Any] | None = None,
    workers: int = 1,
) -> dict[str, Any]:
    """Everything the run measured, with the thresholds' verdicts. ``quota`` is the
    shared quota's account (`late_starts` already counts its late starts); ``workers``
    the processes whose numbers ``recorder`` holds together."""
    requests = recorder.requests
    outcomes = recorder.outcomes
    answered = requests - outcomes[RequestOutcome.DROPPED] - outcomes[RequestOutcome.UNFINISHED]
    achieved = answered / window if window > 0 else 0.0
    target = float(test.request_rate)
    latency = latency_summary(recorder.latency)
    report: dict[str, Any] = {
        "tool": "dispatcher loadtest",
        "version": version,
        "target": {
            "url": target_url,
            "embedded_emulator": test.embedded,
            "endpoint": "single" if test.batch_size == 1 else "batch",
        },
        "settings": test.as_dict(),
        "duration_s": round(float(window), 3),
        "elapsed_s": round(elapsed, 3),
        "target_rate": target,
        "achieved_rate": round(achieved, 3),
        "rate_ratio": round(achieved / target, 4),  # what a 'rate' threshold checks
        "target_recipients_rate": target * test.batch_size,
        "achieved_recipients_rate": round(achieved * test.batch_size, 3),
        "requests": requests,
        "sent": recorder.sent,
        "answered": answered,
        "warmup_requests": recorder.warmup,
        "late_starts": late_starts,
        "quota": quota,
        "workers": workers,
        "dropped": recorder.outcomes[RequestOutcome.DROPPED],
        "unfinished": recorder.outcomes[RequestOutcome.UNFINISHED],
        "outcomes": {str(kind): n for kind, n in recorder.outcomes.items()},
        "errors": recorder.errors,
        "error_rate": round(recorder.errors / requests, 6) if requests else None,
        "latency_ms": latency,
        "start_lag_ms": {
            "p50": recorder.lag.percentile_ms(50),
            "p99": recorder.lag.percentile_ms(99),
            "max": recorder.lag.percentile_ms(100),
        },
        "series": recorder.series,
        "notes": [],
        "thresholds": [],
        "passed": True,
        "aborted": aborted,
        "interrupted": interrupted,
    }

    def metric(threshold: Threshold) -> float | None:
        if threshold.metric == "error_rate":
            value: float | None = report["error_rate"]
        elif threshold.metric == "rate":
            value = report["rate_ratio"] if requests else None
        elif threshold.percentile is not None:
            value = recorder.latency.percentile_ms(threshold.percentile)
        else:
            value = latency[threshold.metric]
        return value

    report["notes"] = _notes(report, test.concurrency)
    verdicts = evaluate(test.thresholds, metric)
    report["thresholds"] = verdicts
    report["passed"] = all(v["passed"] for v in verdicts)
    return report


#: Start lag above this, with free slots, means this process could not keep up.
SLOW_CLIENT_MS = 10.0


def _notes(report: dict[str, Any], concurrency: int) -> list[str]:
    """What a reader of the figures should know to interpret them."""
    notes = []
    lag = report["start_lag_ms"]["p99"]
    quota = report["quota"]
    held = quota["late_starts"] if quota else 0
    if held:
        notes.append(
            f"the shared quota (namespace {quota['namespace']}, {quota['code_rate']:g} "
            f"messages/s) held {held:,} requests past their due time: together with "
            "whoever else sends through it, the test asked more than the code's limit"
        )
    if report["late_starts"] > held or (report["dropped"] and not held):
        notes.append(
            f"all {concurrency} slots were busy at times ({report['late_starts'] - held:,} late "
            f"starts, {report['dropped']:,} dropped): "
            + (
                "requests waiting for the shared quota hold their slot"
                if held
                else "the gateway did not keep up with the rate, or --concurrency is below "
                "rate × latency"
            )
        )
    elif not held and lag is not None and lag > SLOW_CLIENT_MS:
        notes.append(
            f"requests started up to {lag:,.1f} ms (p99) after their due time with slots "
            "free: this process was saturated, and its own delay is part of the latencies"
        )
    return notes


def live_line(row: dict[str, Any], target: float, in_flight: int) -> str:
    """One second of the run, for stderr."""
    return (
        f"[{row['t'] + row['seconds']:>6g}s] {row['rate']:>9,.1f} req/s (target {target:,.6g})"
        f"  p50 {_ms(row['p50_ms'])}  p99 {_ms(row['p99_ms'])}"
        f"  errors {row['errors']:,}  in flight {in_flight:,}"
    )


def table(report: dict[str, Any]) -> str:
    """The final human summary, for stderr."""
    target = report["target"]
    settings = report["settings"]
    where = "embedded emulator " if target["embedded_emulator"] else ""
    latency = report["latency_ms"]
    lag = report["start_lag_ms"]
    outcomes = ", ".join(f"{kind} {n:,}" for kind, n in report["outcomes"].items() if n)
    error_rate = report["error_rate"]
    quota = report["quota"]
    held = quota["late_starts"] if quota else 0
    lines = [
        f"target             {where}{target['url']} ({target['endpoint']} endpoint, "
        f"batch {settings['batch_size']}, concurrency {settings['concurrency']})",
        f"rate               {report['achieved_rate']:,.1f} of {report['target_rate']:,.6g} "
        f"requests/s ({100 * report['rate_ratio']:.1f} %) over {report['duration_s']:g}s"
        + (
            f", {report['achieved_recipients_rate']:,.0f} recipients/s"
            if settings["batch_size"] > 1
            else ""
        ),
        f"requests           {report['requests']:,} due, {report['sent']:,} sent, "
        f"{report['answered']:,} answered",
        f"outcomes           {outcomes or 'none'}",
        f"error rate         {'n/a' if error_rate is None else f'{100 * error_rate:.3f} %'}",
        f"late starts        {report['late_starts'] - held:,} waited for a free slot, "
        + (f"{held:,} for the shared quota, " if quota else "")
        + f"{report['dropped']:,} dropped, {report['unfinished']:,} unfinished",
        "latency (ms)       "
        + "  ".join(f"{name} {_num(latency[name])}" for name in _LATENCY_ORDER),
        f"start lag (ms)     p50 {_num(lag['p50'])}  p99 {_num(lag['p99'])}  "
        f"max {_num(lag['max'])}",
    ]
    for i, verdict in enumerate(report["thresholds"]):
        label = "thresholds" if i == 0 else ""
        actual = verdict["actual"]
        if actual is None:
            shown = "no data"
        elif verdict["unit"] == "ms":
            shown = f"{actual:,.3f} ms"
        else:
            shown = f"{100 * actual:.3f} %"
        mark = "ok" if verdict["passed"] else "FAILED"
        lines.append(f"{label:<19}{verdict['threshold']:<24} {shown:>14}  {mark}")
    lines += [f"note               {note}" for note in report["notes"]]
    if report["aborted"]:
        lines.append(f"aborted            {report['aborted']}")
    elif report["interrupted"]:
        lines.append("interrupted        the run was stopped early")
    elif report["thresholds"]:
        lines.append(f"result             {'PASSED' if report['passed'] else 'FAILED'}")
    return "\n".join(lines)


_LATENCY_ORDER = ("p50", "p90", "p95", "p99", "p99.9", "max", "mean")


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:,.3f}"


def _ms(value: float | None) -> str:
    return "      -  " if value is None else f"{value:>7,.2f} ms"
