"""``--plot``: latency percentiles and achieved rate over time, as a PNG.

matplotlib is an optional extra (``pip install 'sms-dispatcher[loadtest]'``), imported
only here and only when a plot is asked for.
"""

from __future__ import annotations

from typing import Any

from dispatcher.errors import ConfigError

INSTALL_HINT = (
    "--plot needs matplotlib: pip install 'sms-dispatcher[loadtest]' (or pip install matplotlib)"
)


def check_available() -> None:
    """Raise `ConfigError` now, before the test runs, if matplotlib is missing."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise ConfigError(INSTALL_HINT) from None


def plot(report: dict[str, Any], path: str) -> None:
    """Draw the report's per-second series to ``path`` (PNG)."""
    import matplotlib

    matplotlib.use("Agg")  # no display in CI
    import matplotlib.pyplot as plt

    series = report["series"]
    seconds = [row["t"] + 1 for row in series]
    figure, (top, bottom) = plt.subplots(
        2, 1, sharex=True, figsize=(10, 6.5), height_ratios=(3, 2), layout="constrained"
    )
    target = report["target"]
    where = "embedded emulator" if target["embedded_emulator"] else target["url"]
    figure.suptitle(
        f"dispatcher loadtest — {report['target_rate']:,.6g} requests/s, "
        f"batch {report['settings']['batch_size']}, {where}",
        fontsize=11,
    )

    for key, label, style in (("p50_ms", "p50", "-"), ("p99_ms", "p99", "-")):
        values = [row[key] for row in series]
        top.plot(
            seconds,
            [v if v is not None else float("nan") for v in values],
            style,
            marker="o",
            markersize=3,
            label=f"{label} of the second",
        )
    latency = report["latency_ms"]
    for name, color in (("p99", "tab:red"), ("p99.9", "tab:purple")):
        if latency[name] is not None:
            top.axhline(
                latency[name],
                color=color,
                linestyle=":",
                linewidth=1,
                label=f"{name} overall {latency[name]:,.1f} ms",
            )
    for verdict in report["thresholds"]:
        if verdict["unit"] == "ms":
            top.axhline(
                verdict["limit"],
                color="black",
                linestyle="--",
                linewidth=1,
                label=f"threshold {verdict['threshold']}",
            )
    top.set_ylabel("latency from due time (ms)")
    if any(row["p99_ms"] for row in series):
        top.set_yscale("log")
    top.grid(True, which="both", alpha=0.3)
    top.legend(fontsize=8, loc="upper left")

    bottom.plot(
        seconds,
        [row["rate"] for row in series],
        marker="o",
        markersize=3,
        label="answered per second",
    )
    bottom.axhline(
        report["target_rate"], color="black", linestyle="--", linewidth=1, label="target rate"
    )
    errors = [row["errors"] for row in series]
    if any(errors):
        bottom.bar(seconds, errors, color="tab:red", alpha=0.5, label="errors")
    bottom.set_ylabel("requests/s")
    bottom.set_xlabel("seconds since the measured start")
    highest = max([report["target_rate"], *(row["rate"] for row in series)])
    bottom.set_ylim(0, highest * 1.15)
    bottom.set_xlim(left=0)
    bottom.grid(True, alpha=0.3)
    bottom.legend(fontsize=8, loc="lower left")
    figure.savefig(path, dpi=110)
    plt.close(figure)
