"""Progress on stderr while sending, and the human summary table at the end.

Progress is a tqdm bar over the input's bytes (so the ETA follows the file size),
refreshed by the pipeline's ticker a few times a second — never per recipient — and
never written to stdout, which belongs to the results. A ``send --workers`` parent shows
one line for the whole job (`show_job`), from the numbers its workers push it.
"""

from __future__ import annotations

import sys
from datetime import datetime
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    from dispatcher.metrics import Snapshot


class Progress:
    """A progress line on stderr: bytes read (with ETA), results, failures, rate."""

    def __init__(self, total_bytes: int | None, *, stream: TextIO | None = None) -> None:
        from tqdm import tqdm  # imported here: only runs that show progress pay for it

        self._bar = tqdm(
            total=total_bytes,
            unit="B",
            unit_scale=True,
            unit_divisor=1024,
            file=stream or sys.stderr,
            dynamic_ncols=True,
            mininterval=0.25,
            smoothing=0.1,
            leave=True,
        )

    def update(
        self,
        *,
        bytes_read: int,
        total_bytes: int | None,
        lines: int,
        sent: int,
        failed: int,
        rate: float,
        waiting: int = 0,
        next_opening: datetime | None = None,
    ) -> None:
        """Show the latest counters (the input's size may become known late), and the
        lines waiting for their send window with the next opening (UTC)."""
        if total_bytes is not None and self._bar.total != total_bytes:
            self._bar.total = total_bytes
        self._bar.n = bytes_read
        postfix = f"lines={lines:,} sent={sent:,} failed={failed:,} {rate:,.0f}/s"
        if waiting:
            postfix += f" waiting={waiting:,}"
            if next_opening is not None:
                postfix += f" next window {next_opening:%Y-%m-%d %H:%M:%S}Z"
        self._bar.set_postfix_str(postfix, refresh=False)
        self._bar.refresh()

    def close(self) -> None:
        """Leave the final state on screen."""
        self._bar.close()


def show_job(progress: Progress, snapshot: Snapshot, elapsed: float) -> None:
    """The line of a ``send --workers`` job, from its workers' numbers merged
    (`dispatcher.metrics.WorkerMetrics`): this run's results, the input as far as the
    slowest worker has read it (each reads the whole input), the job's rate."""
    from dispatcher.models import Status
    from dispatcher.summary import ACCEPTED

    results = snapshot.values.get("dispatcher_recipients_total", {})
    lines = sent = failed = 0
    for (status, _code), count in results.items():
        lines += int(count)
        if status in ACCEPTED:
            sent += int(count)
        elif status in (Status.FAILED, Status.AMBIGUOUS):
            failed += int(count)
    size = snapshot.get("dispatcher_input_size_bytes")
    progress.update(
        bytes_read=int(snapshot.get("dispatcher_input_read_bytes_total") or 0),
        total_bytes=int(size) if size is not None else None,
        lines=lines,
        sent=sent,
        failed=failed,
        rate=lines / elapsed if elapsed > 0 else 0.0,
    )


def summary_table(summary: dict[str, Any]) -> str:
    """The summary JSON as a short table for humans."""
    rows: list[tuple[str, str]] = [("lines", f"{summary['lines']:,}")]
    for status, count in summary["statuses"].items():
        rows.append((f"  {status}", f"{count:,}"))
    segments = summary["segments"]
    by_encoding = ", ".join(f"{enc} {n:,}" for enc, n in segments["by_encoding"].items())
    rows.append(
        (
            "segments billable",
            f"{segments['billable']:,}" + (f" ({by_encoding})" if by_encoding else ""),
        )
    )
    if segments.get("ambiguous"):
        rows.append(("segments ambiguous", f"{segments['ambiguous']:,}"))
    if "cost" in summary:
        rows.append(("cost", f"{summary['cost']:,.4f}"))
    retries = summary["retries"]
    causes = ", ".join(f"{cause} {n:,}" for cause, n in retries.items() if cause != "total")
    rows.append(("requests", f"{summary['requests']:,}"))
    rows.append(("retries", f"{retries['total']:,}" + (f" ({causes})" if causes else "")))
    latency = summary["latency_ms"]
    if latency["max"]:
        rows.append(
            (
                "latency ms",
                f"p50 {latency['p50']:.1f}  p90 {latency['p90']:.1f}  "
                f"p99 {latency['p99']:.1f}  max {latency['max']:.1f}",
            )
        )
    rows.append(("elapsed", f"{summary['elapsed_s']:.2f} s"))
    rows.append(("recipients/s", f"{summary['recipients_per_s']:,.0f}"))
    for code, stats in summary["codes"].items():
        rate = stats["achieved_rate"]
        limit = stats["configured_rate"]
        rows.append(
            (
                f"code {code}",
                f"{stats['messages']:,} msgs"
                + (f", {rate:,.1f}/s" if rate else "")
                + (f" (limit {limit:,.0f}/s)" if limit else ""),
            )
        )
    rows.extend(_policy_rows(summary.get("policy") or {}, dry_run="estimate" in summary))
    if "windows" in summary:
        rows.extend(_window_rows(summary["windows"], dry_run="estimate" in summary))
    if "estimate" in summary:
        estimate = summary["estimate"]
        rows.append(("estimated send time", f"{estimate['seconds']:,.1f} s"))
        if estimate.get("expires_first"):
            short = ", ".join(f"{n:,} (code {c})" for c, n in estimate["unsent_at_expiry"].items())
            rows.append(("unsent at expiry", f"about {short}"))
    if controls := summary.get("controls"):  # dispatcher ctl, SIGUSR1
        rows.append(("controls", ", ".join(f"{k} {n}" for k, n in controls.items())))
    rows.append(("exit", summary["exit_reason"]))
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)


def _policy_rows(policy: dict[str, Any], *, dry_run: bool) -> list[tuple[str, str]]:
    """What the campaign policies did (or, in a dry run, would do)."""
    rows = []
    would = "would be " if dry_run else ""
    if policy.get("suppressed") or policy.get("duplicates"):
        rows.append(
            (
                f"{would}removed",
                f"{policy['suppressed']:,} by opt-out lists, {policy['duplicates']:,} duplicates",
            )
        )
    if cap := policy.get("cap_reached"):
        rows.append(
            (
                f"cap {'would be ' if dry_run else ''}reached",
                f"{cap['cap']} at line {cap['line']:,}: {policy['not_sent']:,} lines NOT_SENT"
                " (resumable)",
            )
        )
    elif dry_run and policy:
        rows.append(("caps", "none reached"))
    if policy.get("smart_encoded"):
        rows.append(
            (
                "smart encoding",
                f"{policy['smart_encoded']:,} messages, {policy['segments_saved']:,} "
                "segments saved",
            )
        )
    if policy.get("superseded"):
        rows.append(("superseded", f"{policy['superseded']:,} earlier results replaced"))
    return rows


#: Openings listed in the table (the summary JSON lists more).
OPENINGS_SHOWN = 8


def _window_rows(windows: dict[str, Any], *, dry_run: bool) -> list[tuple[str, str]]:
    """What the send windows did (or, in a dry run, would do), and when each zone opens."""
    waited = "would wait" if dry_run else "waited"
    parts = [f"{windows['waited']:,} {waited}", f"{windows['skipped']:,} skipped"]
    if windows["never_open"]:
        parts.append(f"{windows['never_open']:,} never open in all their zones")
    if windows["default_zone"]:
        parts.append(f"{windows['default_zone']:,} in the default zone {windows['default_tz']}")
    rows = [(f"window {windows['window']} ({windows['outside_window']})", ", ".join(parts))]
    openings = windows["openings"]
    for opening in openings[:OPENINGS_SHOWN]:
        opens = opening["opens"].replace("T", " ").replace(":00Z", "Z")
        rows.append((f"  opens {opens}", f"{opening['zones']}: {opening['lines']:,} lines"))
    more = len(openings) - OPENINGS_SHOWN + windows["openings_not_listed"]
    if more > 0:
        rows.append(("  …", f"{more:,} more openings"))
    return rows
