"""``dispatcher demo``: the whole job, for real, against an emulator in this process."""

from __future__ import annotations

import argparse
import sys

from dispatcher.cli._common import ExitCode, Parser, bounded, usage_error

HELP = "send generated recipients through the embedded emulator"
DESCRIPTION = (
    "Start the gateway emulator in this process, generate recipients, send them "
    "through the real pipeline over real HTTP, write demo-out/ (results, invalid "
    "numbers, summary) and check the emulator's ledger: nothing lost, nothing "
    "twice. The emulator injects a few faults unless --no-faults."
)


def options(p: Parser) -> None:
    from dispatcher.cli._emulator import add_fault_flags
    from dispatcher.demo import DEMO_FAULTS

    p.add_argument(
        "--count",
        type=bounded(int, 0, 100_000_000),
        default=100_000,
        metavar="N",
        help="recipients to generate",
    )
    p.add_argument("--out", default="demo-out", help="directory for the outputs")
    p.add_argument("--seed", type=int, default=1, help="seed for recipients and faults")
    p.add_argument(
        "--no-faults", action="store_true", help="no injected failures (latency flags still apply)"
    )
    p.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        help="progress on stderr (default: when stderr is a terminal)",
    )
    add_fault_flags(p, DEMO_FAULTS)


def run(args: argparse.Namespace) -> int:
    from dispatcher import demo, logs, pipeline
    from dispatcher.cli._emulator import faults_from
    from dispatcher.cli.send import report_summary, signals_for
    from dispatcher.emulator import FaultSettings

    try:
        faults = faults_from(args)
    except ValueError as exc:
        return usage_error(exc)
    if args.no_faults:
        faults = FaultSettings(latency_ms=faults.latency_ms, jitter_ms=faults.jitter_ms)
    logs.configure("warning")
    shutdown = pipeline.Shutdown()
    result = signals_for(shutdown).run(
        demo.run_demo(
            count=args.count,
            out=args.out,
            seed=args.seed,
            faults=faults,
            progress=args.progress,
            shutdown=shutdown,
        )
    )
    code = report_summary(result.summary, strict=False, summary_path=f"{args.out}/summary.json")
    demo.write_ledger(result, args.out)
    print(demo.ledger_lines(result), file=sys.stderr)
    print(f"outputs            {args.out}/", file=sys.stderr)
    return ExitCode.FAILED if result.problems and code == ExitCode.OK else code
