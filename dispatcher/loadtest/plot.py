"""``--plot``: latency percentiles and achieved rate over time, as a PNG.

matplotlib is an optional extra (``pip install 'sms-dispatcher[loadtest]'``), imported
only here and only when a plot is asked for.
"""

from __future__ import annotations

import os
from typing import Any

from dispatcher.errors import ConfigError

INSTALL_HINT = (
    "--plot needs matplotlib: pip install 'sms-dispatcher[loadtest]' (or pip install matplotlib)"
)


def check_available(path: str | None = None) -> None:
    """Raise `ConfigError` now, before the test runs, if matplotlib is missing or
    cannot draw the kind of image ``path``'s extension names (no extension: PNG)."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise ConfigError(INSTALL_HINT) from None
    from matplotlib.backend_bases import FigureCanvasBase

    kind = os.path.splitext(path or "")[1].removeprefix(".").lower()
    known = FigureCanvasBase.get_supported_filetypes()
    if kind and kind not in known:
        raise ConfigError(
            f"--plot {path}: matplotlib cannot draw a .{kind} image; "
            f"name a .png file (or one of {', '.join(sorted(known))})"
        )


def plot(report: dict[str, Any], path: str) -> None:
    """Draw the report's per-second series to ``path`` (PNG)."""
    import matplotlib

    matplotlib.use("Agg")  # no display in CI
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    series = report["series"]
    ends = [row["t"] + row["seconds"] for row in series]
    mids = [row["t"] + row["seconds"] / 2 for row in series]
    figure, (top, bottom) = plt.subplots(
        2, 1, sharex=True, figsize=(10, 6.5), height_ratios=(3, 2), layout="constrained"
    )
    target = report["target"]
    where = "embedded emulator" if target["embedded_emulator"] else target["url"]
    verdict = ""
    if report["thresholds"]:
        verdict = " — thresholds " + ("passed" if report["passed"] else "FAILED")
    figure.suptitle(
        f"dispatcher loadtest: {report['target_rate']:,.6g} requests/s, batch "
        f"{report['settings']['batch_size']}, {where}{verdict}",
        fontsize=11,
    )

    latency = report["latency_ms"]
    shown = [row[key] for row in series for key in ("p50_ms", "p99_ms") if row[key]]
    shown += [latency[name] for name in ("p99", "p99.9") if latency[name]]
    for key, label in (("p50_ms", "p50"), ("p99_ms", "p99")):
        values = [row[key] if row[key] is not None else float("nan") for row in series]
        top.plot(ends, values, marker="o", markersize=3, label=f"{label} of each second")
    for name, color in (("p99", "tab:red"), ("p99.9", "tab:purple")):
        if latency[name] is not None:
            top.axhline(
                latency[name],
                color=color,
                linestyle=":",
                linewidth=1,
                label=f"{name} of the run {latency[name]:,.1f} ms",
            )
    highest = max(shown, default=1.0)
    for item in report["thresholds"]:
        if item["unit"] != "ms":
            continue
        if item["limit"] <= 2 * highest:
            top.axhline(
                item["limit"],
                color="black",
                linestyle="--",
                linewidth=1,
                label=f"threshold {item['threshold']}",
            )
            shown.append(item["limit"])
        else:  # drawing it would flatten the data: name it only
            top.plot([], [], " ", label=f"threshold {item['threshold']} (above the plot)")
    lowest = min((v for v in shown if v > 0), default=1.0)
    if max(shown, default=1.0) / lowest > 20:
        top.set_yscale("log")
        top.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    else:
        top.set_ylim(0, max(shown, default=1.0) * 1.15)
    top.set_ylabel("latency from due time (ms)")
    top.grid(True, which="both", alpha=0.3)
    top.legend(fontsize=8, loc="best")

    bottom.plot(
        ends, [row["rate"] for row in series], marker="o", markersize=3, label="answered per second"
    )
    bottom.axhline(
        report["target_rate"], color="black", linestyle="--", linewidth=1, label="target rate"
    )
    errors = [row["errors"] / row["seconds"] for row in series]
    if any(errors):
        widths = [0.8 * row["seconds"] for row in series]
        bottom.bar(
            mids, errors, width=widths, color="tab:red", alpha=0.5, label="errors per second"
        )
    window = report["duration_s"]
    for axis in (top, bottom):
        axis.axvline(window, color="grey", linewidth=0.8)
    bottom.annotate(
        "schedule ends",
        (window, 0.97),
        xycoords=("data", "axes fraction"),
        xytext=(-4, 0),
        textcoords="offset points",
        ha="right",
        va="top",
        fontsize=8,
        color="grey",
    )
    bottom.set_ylabel("requests/s")
    bottom.set_xlabel("seconds since the measured start (each point: the second ending there)")
    rates = [report["target_rate"], *(row["rate"] for row in series)]
    bottom.set_ylim(0, max(rates) * 1.15)
    bottom.set_xlim(left=0)
    bottom.grid(True, alpha=0.3)
    bottom.legend(fontsize=8, loc="lower left")
    figure.savefig(path, dpi=110)
    plt.close(figure)
