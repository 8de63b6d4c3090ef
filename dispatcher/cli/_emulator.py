"""The emulator's flags, declared once: from the metadata of the `FaultSettings` and
`EmulatorSettings` fields. ``gateway`` takes them all; ``loadtest`` and ``demo`` take
the fault flags for the emulator they embed.

Imported only when one of those commands runs (the emulator package loads aiohttp).
"""

from __future__ import annotations

import argparse
from dataclasses import MISSING, Field, fields
from typing import Any

from dispatcher.cli._common import checked, number_type
from dispatcher.emulator.settings import SHARE, EmulatorSettings, FaultSettings

#: A share of requests, 0..1.
share = number_type(SHARE)


def _flagged(cls: type[Any]) -> list[Field[Any]]:
    return [f for f in fields(cls) if "help" in f.metadata]


def add_flags(
    group: argparse._ActionsContainer, cls: type[Any], defaults: object | None = None
) -> None:
    """One option per field of ``cls`` that has help in its metadata; the defaults
    are the dataclass's, or those of the ``defaults`` instance."""
    for f in _flagged(cls):
        meta = f.metadata
        if defaults is not None:
            default = getattr(defaults, f.name)
        else:
            default = f.default if f.default is not MISSING else None
        flag = meta.get("flag") or "--" + f.name.replace("_", "-")
        settings: dict[str, Any] = {"dest": f.name, "help": meta["help"], "default": default}
        if isinstance(default, bool):
            settings["action"] = "store_false" if default else "store_true"
        elif "collect" in meta:
            settings.update(action="append", type=checked(meta.get("item", str)), default=[])
        else:
            kind = meta.get("type", type(default))
            if "number" in meta:
                kind = number_type(meta["number"])
            settings.update(type=kind, choices=meta.get("choices"))
        if "metavar" in meta or meta.get("share"):
            settings["metavar"] = meta.get("metavar", "SHARE")
        group.add_argument(flag, **settings)


def values(args: argparse.Namespace, cls: type[Any]) -> dict[str, Any]:
    """The flagged fields' values from parsed arguments, ready for ``cls(**values)``."""
    out = {}
    for f in _flagged(cls):
        value = getattr(args, f.name)
        collect = f.metadata.get("collect")
        out[f.name] = collect(value) if collect is not None else value
    return out


def add_fault_flags(parser: argparse.ArgumentParser, defaults: FaultSettings | None = None) -> None:
    """The fault and latency flags of an emulator."""
    add_flags(parser.add_argument_group("emulator faults"), FaultSettings, defaults)


def faults_from(args: argparse.Namespace) -> FaultSettings:
    """The fault settings the flags describe; ValueError for a bad combination."""
    return FaultSettings(**values(args, FaultSettings))


def add_emulator_flags(parser: argparse.ArgumentParser) -> None:
    """Every flag of ``dispatcher gateway``'s emulator, faults included."""
    add_flags(parser.add_argument_group("emulator"), EmulatorSettings)
    add_fault_flags(parser)


def emulator_from(args: argparse.Namespace, *, api_key: str) -> EmulatorSettings:
    """The emulator the flags describe (``--owner`` names the operator too)."""
    settings = values(args, EmulatorSettings)
    return EmulatorSettings(
        api_key=api_key, operator=settings["owner"], faults=faults_from(args), **settings
    )
