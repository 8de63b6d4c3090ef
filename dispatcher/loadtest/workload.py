"""The request bodies a load test sends: built once, before the clock starts.

Recipients come from `dispatcher.gen` (valid numbers only) or from an NDJSON file the
user gives; a line whose number is invalid or whose params do not fill the template is
skipped. The bodies cycle over a bounded pool, so a long test at a high rate costs no
more memory than a short one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Final

from dispatcher import gen
from dispatcher.api import batch_body, single_body
from dispatcher.errors import ConfigError, InvalidNumber, RenderError
from dispatcher.models import Recipient
from dispatcher.numbers import normalize
from dispatcher.reader import Reader, parse_lines
from dispatcher.renderer import compile_template
from dispatcher.segments import count as count_segments

#: Recipients held at most, whatever the batch size; bodies repeat beyond it.
POOL_RECIPIENTS: Final = 100_000
#: Distinct bodies at most: enough that a gateway cannot cache one answer.
POOL_BODIES: Final = 1_000


@dataclass(frozen=True, slots=True)
class Workload:
    """Pre-built JSON bodies, used in turn (request k sends ``bodies[k % len(bodies)]``);
    ``single`` picks the endpoint."""

    bodies: tuple[bytes, ...]
    single: bool
    batch_size: int
    recipients: int
    #: each body's segments (the flat model), for a quota that counts segments
    segments: tuple[int, ...] = ()


async def build(
    *,
    batch_size: int,
    requests: int,
    sender: str,
    text: str,
    source: str | None = None,
    seed: int = 1,
) -> Workload:
    """Bodies for ``requests`` requests of ``batch_size`` recipients each."""
    count = max(1, min(POOL_BODIES, requests, math.ceil(POOL_RECIPIENTS / batch_size)))
    wanted = max(batch_size, min(POOL_RECIPIENTS, count * batch_size))
    if source is None:
        recipients = _generated(wanted, seed)
    else:
        recipients = await _from_file(source, wanted)
    template = compile_template(text)
    usable: list[tuple[str, list[Any], str]] = []
    parts: list[int] = []
    for recipient in recipients:
        try:
            usable.append(
                (normalize(recipient.to), recipient.params, template.render(recipient.params))
            )
        except (InvalidNumber, RenderError):
            continue
        parts.append(count_segments(usable[-1][2], "flat")[2])
    if not usable:
        where = source or "the generator"
        raise ConfigError(f"no usable recipient in {where}: every number or params was refused")
    options = {"from": sender, "type": "MT"}
    bodies = []
    segments = []
    position = 0
    for _ in range(count):
        segments.append(sum(parts[(position + j) % len(usable)] for j in range(batch_size)))
        if batch_size == 1:
            to, _, rendered = usable[position % len(usable)]
            bodies.append(single_body(options, rendered, to))
        else:
            chosen = [usable[(position + j) % len(usable)] for j in range(batch_size)]
            bodies.append(
                batch_body(
                    options, text, [{"to": to, "params": params} for to, params, _ in chosen]
                )
            )
        position += batch_size
    return Workload(tuple(bodies), batch_size == 1, batch_size, len(usable), tuple(segments))


def _generated(count: int, seed: int) -> list[Recipient]:
    data = b"".join(gen.generate(count, seed=seed, invalid_share=0.0, ref_share=0.0))
    return [r for r in parse_lines(data.splitlines(), 1) if isinstance(r, Recipient)]


async def _from_file(source: str, count: int) -> list[Recipient]:
    reader = Reader(source)
    recipients: list[Recipient] = []
    try:
        async for chunk in reader:
            recipients += (r for r in chunk if isinstance(r, Recipient))
            if len(recipients) >= count:
                break
    except OSError as exc:  # InputError: missing or unreadable file
        raise ConfigError(f"--input {source}: {exc}") from None
    finally:
        await reader.aclose()
    return recipients[:count]
