"""``dispatcher send`` on a file mixing every kind of line, against a real emulator.

One result per non-blank input line with the right status, segments, encoding, ref and
error; every QUEUE result is exactly one message in the emulator's ledger (number,
sender, server-rendered text, externalId/clientId) and the ledger holds nothing else;
lines with different overrides never share a batch; the invalid-number, rejects and
summary files agree with the results.
"""

from __future__ import annotations

import gzip
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.support.cli import (
    ALPHA,
    CODE,
    KEY,
    by_line,
    check_against_ledger,
    dispatcher,
    ndjson,
    render,
    send_args,
    write_lines,
)
from tests.support.emulators import EmulatorFactory

TEMPLATE = "Hi {0}, you owe {1}"
#: Numbers starting with these digits pass the client's check but the gateway refuses.
GATEWAY_INVALID = "52559"


@dataclass(frozen=True)
class Line:
    """One input line and what its result must be."""

    raw: bytes | str | dict[str, Any] | None  # None: a blank line
    status: str = "QUEUE"
    to: str | None = None  # the result's "to" (normalised for sent lines)
    sender: str = CODE
    text: str | None = None  # rendered text, for QUEUE lines
    segments: int | None = None
    encoding: str | None = None
    group: tuple[Any, ...] = ()  # overrides that put the line in its own group
    source: str | None = None  # for INVALID_NUMBER: client or gateway
    extra: dict[str, Any] = field(default_factory=dict)  # other exact fields


def queued(
    to: str,
    params: list[Any],
    *,
    segments: int = 1,
    encoding: str = "GSM7",
    raw_to: str | None = None,
    **overrides: Any,
) -> Line:
    """A line that must be sent: the expected rendering comes from the test's oracle."""
    raw: dict[str, Any] = {"to": raw_to or to, "params": params, **overrides}
    template = overrides.get("text", TEMPLATE)
    sender = overrides.get("from", CODE)
    group = tuple(overrides.get(k) for k in ("from", "text", "externalId", "clientId", "email"))
    extra = {"ref": overrides["ref"]} if "ref" in overrides else {}
    return Line(
        raw,
        to=to,
        sender=sender,
        text=render(template, params),
        segments=segments,
        encoding=encoding,
        group=group,
        extra=extra,
    )


RUSSIAN = "Привет" * 12  # 72 UCS-2 units
CASES: list[Line] = [
    queued("+525500000001", ["Elizabeth", 10.65]),
    queued("+525500000002", ["Joshua", 20.5], raw_to="525500000002", ref="crm-8812"),
    Line(None),
    Line("   \t "),
    queued("+15005550006", ["4417"], text="Your code is {0}", **{"from": ALPHA}),
    Line(
        {"to": "12ab", "params": ["x", 1], "ref": 7},
        "INVALID_NUMBER",
        to="12ab",
        source="client",
        extra={"ref": 7},
    ),
    Line("not json", "REJECTED"),
    Line("[1,2]", "REJECTED"),
    Line({"to": 5}, "REJECTED"),
    Line({"to": "+525500000010", "params": "Ann"}, "REJECTED"),
    Line({"to": "+525500000011", "params": [["nested"], 1]}, "REJECTED"),
    Line({"to": "+525500000012", "params": ["x", 1], "from": 7}, "REJECTED"),
    Line(b'{"to": "+525500000013", "params": ["a\x00b", 1]}', "REJECTED"),
    queued("+525500000014", ["Zoë 😀", 3], encoding="UCS2"),  # 20 UTF-16 units
    queued("+525500000015", [RUSSIAN, 1], segments=2, encoding="UCS2"),  # 86 units
    Line(orjson.dumps({"to": "+525500000016", "params": ["x" * 70_000, 1]}), "REJECTED"),
    Line(
        {"to": "+525500000017", "params": ["only"], "ref": "r17"},
        "REJECTED",
        to="+525500000017",
        extra={"ref": "r17"},
    ),
    queued("+525500000018", ["A", 1], externalId="ext-1"),
    queued("+525500000019", ["B", 2], externalId="ext-2"),
    queued("+525500000020", ["C", 3], externalId="ext-1", ref={"crm": [1, 2]}),
    queued("+525500000001", ["Again", True]),  # the same number as line 1, same batch
    Line(
        {"to": "+525500000022", "params": ["x" * 1600, 1]},
        "SEGMENTS_EXCEEDED",
        to="+525500000022",
        extra={"segments": 11, "encoding": "GSM7"},
    ),
    queued("+525500000023", ["fmt", 0.1], raw_to="+52 (55) 0000-0023"),
    queued("+525500000024", ["Brace {name} [x] €", False]),  # extension chars: 2 septets
    Line({"to": "+525500000025", "text": "", "params": []}, "REJECTED", to="+525500000025"),
    queued("+525500000026", ["y" * 150, 1], segments=2),  # 164 septets
    queued("+525500000027", ["a", 1], clientId="cli-9"),
    queued("+525500000028", ["a", 2], email="a@example.com"),
    Line(
        {"to": "+0525500000029", "params": ["a", 1]},
        "INVALID_NUMBER",
        to="+0525500000029",
        source="client",
    ),
    Line({"to": "+1234567", "params": ["a", 1]}, "INVALID_NUMBER", to="+1234567", source="client"),
    Line(
        {"to": f"+{GATEWAY_INVALID}0000031", "params": ["a", 1], "ref": "g"},
        "INVALID_NUMBER",
        to=f"+{GATEWAY_INVALID}0000031",
        source="gateway",
        extra={"ref": "g"},
    ),
    queued("+525500000032", ["{0} stays {0}", 1]),  # a param is never read as a template
    queued("+525500000033", ["ün ñ à", 2]),  # GSM-7 letters outside ASCII
    Line(None),
    queued("+525500000035", ["last", 35]),
]


def input_lines() -> list[bytes | str | dict[str, Any]]:
    return [b"" if case.raw is None else case.raw for case in CASES]


def expected_lines() -> dict[int, Line]:
    """Line number → expectation, for every non-blank line."""
    blank = (None, "   \t ")
    return {n: case for n, case in enumerate(CASES, 1) if case.raw not in blank}


async def test_every_line_gets_its_exact_result(
    emulator_factory: EmulatorFactory, tmp_path: Path
) -> None:
    emulator = await emulator_factory(
        api_key=KEY, rate_limit=False, invalid_prefixes=(GATEWAY_INVALID,)
    )
    source = write_lines(tmp_path / "in.ndjson", input_lines())
    run = await dispatcher(
        *send_args(emulator.base_url, source),
        "--results", "results.ndjson",
        "--invalid", "invalid.ndjson",
        "--rejects", "rejects.ndjson",
        "--summary", "summary.json",
        cwd=tmp_path,
    )  # fmt: skip
    assert run.code == 0, run.stderr
    assert run.stdout == b"", "results go to --results, nothing else to stdout"
    results = ndjson(tmp_path / "results.ndjson")
    expected = expected_lines()
    got = by_line(results)
    assert set(got) == set(expected)
    assert len(results) == len(expected)

    for number, case in expected.items():
        result = got[number]
        assert result["status"] == case.status, (number, result)
        if case.to is not None:
            assert result["to"] == case.to, (number, result)
        for key, value in case.extra.items():
            assert result[key] == value, (number, key, result)
        if "ref" not in case.extra:
            assert "ref" not in result, (number, result)
        if case.status == "QUEUE":
            assert "error" not in result, (number, result)
            assert (result["segments"], result["encoding"]) == (case.segments, case.encoding), (
                number,
                result,
            )
            assert result["attempts"] == 1
            assert isinstance(result["id"], str)
            assert result["id"]
            assert isinstance(result["transactionId"], str)
            assert result["transactionId"]
        else:
            assert isinstance(result.get("error"), str), (number, result)
            assert result["error"], (number, result)
            assert "id" not in result, (number, result)

    messages = emulator.messages()
    sent = {
        n: (case.to, case.sender, case.text)
        for n, case in expected.items()
        if case.status == "QUEUE"
    }
    check_against_ledger(results, messages, sent)  # type: ignore[arg-type]

    # Different overrides never share a batch (a batch is one idempotency key), and
    # externalId / clientId reach the gateway with the lines that carry them.
    line_of = {r["id"]: r["line"] for r in results if r["status"] == "QUEUE"}
    batches: dict[str, set[tuple[Any, ...]]] = defaultdict(set)
    for message in messages:
        case = expected[line_of[message["id"]]]
        batches[message["idempotencyKey"]].add(case.group)
        raw = case.raw
        assert isinstance(raw, dict)
        assert message["externalId"] == raw.get("externalId")
        assert message["clientId"] == raw.get("clientId")
    assert all(len(groups) == 1 for groups in batches.values()), batches
    # At 100/s (the shortcode default) a batch holds at most 5 messages (1/20 s worth).
    sizes = Counter(m["idempotencyKey"] for m in messages)
    assert max(sizes.values()) <= 5
    assert {g for groups in batches.values() for g in groups} == {
        case.group for case in expected.values() if case.text
    }

    # --invalid: client-side and gateway-side refusals, each once, with its source.
    invalid = ndjson(tmp_path / "invalid.ndjson")
    assert sorted((i["line"], i["to"], i["source"]) for i in invalid) == sorted(
        (n, case.to, case.source) for n, case in expected.items() if case.status == "INVALID_NUMBER"
    )
    assert all(isinstance(i["reason"], str) and i["reason"] for i in invalid)

    # --rejects: the malformed lines (not the render errors, which are about the text).
    rejects = ndjson(tmp_path / "rejects.ndjson")
    malformed = {n for n, case in expected.items() if case.status == "REJECTED" and case.to is None}
    assert {r["line"] for r in rejects} == malformed
    assert all(r["reason"] for r in rejects)

    summary = orjson.loads((tmp_path / "summary.json").read_bytes())
    assert summary["statuses"] == dict(Counter(r["status"] for r in results))
    assert summary["lines"] == len(results)
    billable = [r for r in results if r["status"] == "QUEUE"]
    assert summary["segments"]["billable"] == sum(r["segments"] for r in billable)
    by_encoding: Counter[str] = Counter()
    for r in billable:
        by_encoding[r["encoding"]] += r["segments"]
    assert summary["segments"]["by_encoding"] == dict(by_encoding)
    stats = await emulator.stats()
    assert summary["requests"] == stats["requests"]["batch"] == len(batches)
    assert stats["accepted"] == len(billable)
    assert stats["duplicates"] == 0
    assert {code: c["messages"] for code, c in summary["codes"].items()} == dict(
        Counter(m["from"] for m in messages)
    )
    assert summary["exit_reason"] == "completed"
    assert summary["exit_code"] == 0


async def test_strict_turns_invalid_lines_into_exit_1(
    emulator_factory: EmulatorFactory, tmp_path: Path
) -> None:
    emulator = await emulator_factory(api_key=KEY, rate_limit=False)
    good = write_lines(tmp_path / "good.ndjson", [{"to": "+525500000001", "params": ["a", 1]}])
    bad = write_lines(
        tmp_path / "bad.ndjson",
        [{"to": "+525500000002", "params": ["a", 1]}, {"to": "nope", "params": ["b", 2]}],
    )
    rejected = write_lines(tmp_path / "rejected.ndjson", ["{oops"])
    for source, strict, code in (
        (good, True, 0),
        (bad, False, 0),
        (bad, True, 1),
        (rejected, False, 0),
        (rejected, True, 1),
    ):
        flags = ["--strict"] if strict else []
        run = await dispatcher(*send_args(emulator.base_url, source, *flags), cwd=tmp_path)
        assert run.code == code, (source.name, strict, run.stderr)
        assert len(run.results()) == len(source.read_bytes().splitlines())


async def test_crlf_bom_gzip_and_no_final_newline(
    emulator_factory: EmulatorFactory, tmp_path: Path
) -> None:
    emulator = await emulator_factory(api_key=KEY, rate_limit=False)
    body = (
        b"\xef\xbb\xbf"  # a UTF-8 BOM before line 1
        b'{"to": "+525500000001", "params": ["one", 1]}\r\n'
        b"\r\n"  # line 2: blank
        b'{"to": "+525500000003", "params": ["three", 3], "ref": "x"}\r\n'
        b"   \r\n"  # line 4: blank
        b"{broken\r\n"  # line 5
        b'{"to": "+525500000006", "params": ["six", 6]}'  # line 6, no newline at the end
    )
    plain = tmp_path / "in.ndjson"
    plain.write_bytes(body)
    packed = tmp_path / "in.ndjson.gz"
    packed.write_bytes(gzip.compress(body))
    for source in (plain, packed):
        run = await dispatcher(*send_args(emulator.base_url, source), cwd=tmp_path)
        assert run.code == 0, run.stderr
        got = by_line(run.results())
        assert set(got) == {1, 3, 5, 6}, source
        assert [got[n]["status"] for n in (1, 3, 5, 6)] == ["QUEUE", "QUEUE", "REJECTED", "QUEUE"]
        assert got[3]["ref"] == "x"
    texts = sorted(m["text"] for m in emulator.messages())
    expected = [render(TEMPLATE, p) for p in (["one", 1], ["three", 3], ["six", 6])]
    assert texts == sorted(expected * 2)  # the plain run and the gzip run


async def test_repeated_numbers_map_ids_by_order(
    emulator_factory: EmulatorFactory, tmp_path: Path
) -> None:
    """Repeated numbers and gateway refusals in one batch: each line's id leads to the
    ledger message rendered from that line's own params."""
    emulator = await emulator_factory(
        api_key=KEY, rate_limit=False, invalid_prefixes=(GATEWAY_INVALID,)
    )
    a, b, c, bad = "+525500000001", "+525500000002", "+525500000003", f"+{GATEWAY_INVALID}000009"
    numbers = [a, b, a, bad, a, b, bad, c, a, "525500000001", bad, b]
    lines = [{"to": to, "params": [f"line{n}", n]} for n, to in enumerate(numbers, 1)]
    source = write_lines(tmp_path / "in.ndjson", lines)
    run = await dispatcher(
        *send_args(emulator.base_url, source, "--invalid", "invalid.ndjson"),
        *("--rate", f"{CODE}=inf", "--linger-ms", "5000"),  # one batch for all the lines
        cwd=tmp_path,
    )
    assert run.code == 0, run.stderr
    results = run.results()
    got = by_line(results)
    assert set(got) == set(range(1, len(numbers) + 1))
    expected = {
        n: ("+" + to.lstrip("+"), CODE, render(TEMPLATE, [f"line{n}", n]))
        for n, to in enumerate(numbers, 1)
        if not to.startswith(bad)
    }
    check_against_ledger(results, emulator.messages(), expected)
    refused = {n for n, to in enumerate(numbers, 1) if to == bad}
    assert {n for n, r in got.items() if r["status"] == "INVALID_NUMBER"} == refused
    invalid = ndjson(tmp_path / "invalid.ndjson")
    assert sorted((i["line"], i["source"]) for i in invalid) == [
        (n, "gateway") for n in sorted(refused)
    ]
    stats = await emulator.stats()
    assert stats["requests"]["batch"] == 1  # all in one batch: the mapping was by order


async def test_a_batch_of_only_gateway_invalid_numbers(
    emulator_factory: EmulatorFactory, tmp_path: Path
) -> None:
    emulator = await emulator_factory(
        api_key=KEY, rate_limit=False, invalid_prefixes=(GATEWAY_INVALID,)
    )
    lines = [{"to": f"+{GATEWAY_INVALID}00000{n}", "params": ["x", n]} for n in range(1, 4)]
    source = write_lines(tmp_path / "in.ndjson", lines)
    run = await dispatcher(
        *send_args(emulator.base_url, source, "--summary", "summary.json"), cwd=tmp_path
    )
    assert run.code == 0, run.stderr
    assert [r["status"] for r in run.results()] == ["INVALID_NUMBER"] * 3
    assert emulator.messages() == []
    summary = orjson.loads((tmp_path / "summary.json").read_bytes())
    assert {k: v for k, v in summary["statuses"].items() if v} == {"INVALID_NUMBER": 3}
    assert summary["segments"]["billable"] == 0
    assert all(c["messages"] == 0 for c in summary["codes"].values())


async def test_summary_has_no_zero_entries(
    emulator_factory: EmulatorFactory, tmp_path: Path
) -> None:
    emulator = await emulator_factory(
        api_key=KEY, rate_limit=False, invalid_prefixes=(GATEWAY_INVALID,)
    )
    source = write_lines(
        tmp_path / "in.ndjson", [{"to": f"+{GATEWAY_INVALID}000001", "params": ["x", 1]}]
    )
    run = await dispatcher(
        *send_args(emulator.base_url, source, "--summary", "summary.json"), cwd=tmp_path
    )
    assert run.code == 0, run.stderr
    summary = orjson.loads((tmp_path / "summary.json").read_bytes())
    assert summary["statuses"] == {"INVALID_NUMBER": 1}
    assert summary["codes"] == {}


BOUNDARY_TEXTS = [
    "x" * 160,  # one full GSM-7 segment
    "x" * 161,
    "x" * 159 + "€",  # the euro sign is an escape pair: 161 septets
    "x" * 80 + "{}" * 40,  # braces are escape pairs too: 160 septets
    "Ω" * 70,  # Greek capitals are in the GSM-7 basic table
    "ж" * 70,
    "ж" * 71,
    "😀" * 35,  # 70 UTF-16 units
    "😀" * 35 + "a",
    "line\nbreak\r\fform feed",
    "x" * 1600,  # ten segments: the most the gateway takes
    "ж" * 700,
    "nul\x00inside",  # an escaped NUL is valid JSON, and not GSM-7
    "esc\x1binside",  # ESC is the escape septet, not a character
    "tab\tand `backtick` and ç",
    "£$¥èéùìòÇØøÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ¤¡ÄÖÑÜ§¿äöñüà^{}\\[~]|€",
]


async def test_segments_agree_with_the_gateway(
    emulator_factory: EmulatorFactory, tmp_path: Path
) -> None:
    """The client counts segments itself (flat model); the emulator counts them on its
    own; results must match the ledger exactly at every boundary."""
    emulator = await emulator_factory(api_key=KEY, rate_limit=False)
    lines = [{"to": f"+5255000000{n:02d}", "params": [t]} for n, t in enumerate(BOUNDARY_TEXTS, 1)]
    source = write_lines(tmp_path / "in.ndjson", lines)
    run = await dispatcher(*send_args(emulator.base_url, source, text="{0}"), cwd=tmp_path)
    assert run.code == 0, run.stderr
    expected = {n: (f"+5255000000{n:02d}", CODE, text) for n, text in enumerate(BOUNDARY_TEXTS, 1)}
    check_against_ledger(run.results(), emulator.messages(), expected)


async def test_an_empty_per_line_sender_is_rejected_locally(
    emulator_factory: EmulatorFactory, tmp_path: Path
) -> None:
    emulator = await emulator_factory(api_key=KEY, rate_limit=False)
    source = write_lines(
        tmp_path / "in.ndjson",
        [
            {"to": "+525500000001", "params": ["a", 1], "from": ""},
            {"to": "+525500000002", "params": ["b", 2]},
        ],
    )
    run = await dispatcher(*send_args(emulator.base_url, source), cwd=tmp_path)
    got = by_line(run.results())
    assert got[2]["status"] == "QUEUE"
    assert got[1]["status"] == "REJECTED"
    assert (await emulator.stats())["requests"]["batch"] == 1  # no request for line 1
    assert run.code == 0


async def test_a_gateway_with_a_smaller_batch_limit_gets_halves(
    emulator_factory: EmulatorFactory, tmp_path: Path
) -> None:
    """413: the batch is split in two and the halves sent; nothing is lost or doubled."""
    emulator = await emulator_factory(api_key=KEY, rate_limit=False, max_batch=3)
    lines = [{"to": f"+5255000000{n:02d}", "params": [f"n{n}", n]} for n in range(1, 11)]
    source = write_lines(tmp_path / "in.ndjson", lines)
    run = await dispatcher(
        *send_args(emulator.base_url, source, "--rate", f"{CODE}=inf", "--summary", "s.json"),
        cwd=tmp_path,
    )
    assert run.code == 0, run.stderr
    expected = {
        n: (f"+5255000000{n:02d}", CODE, render(TEMPLATE, [f"n{n}", n])) for n in range(1, 11)
    }
    check_against_ledger(run.results(), emulator.messages(), expected)
    stats = await emulator.stats()
    assert stats["responses"]["413"] >= 1
    assert stats["duplicates"] == 0
    summary = orjson.loads((tmp_path / "s.json").read_bytes())
    assert summary["retries"]["413-split"] == stats["responses"]["413"]


@pytest.mark.parametrize("body", [b"", b"\n\n  \r\n\t\n"], ids=["empty", "only-blank"])
async def test_an_input_without_recipients_is_a_quiet_success(
    emulator_factory: EmulatorFactory, tmp_path: Path, body: bytes
) -> None:
    emulator = await emulator_factory(api_key=KEY, rate_limit=False)
    source = tmp_path / "in.ndjson"
    source.write_bytes(body)
    run = await dispatcher(
        *send_args(emulator.base_url, source, "--summary", "s.json", "--strict"), cwd=tmp_path
    )
    assert run.code == 0, run.stderr
    assert run.stdout == b""
    summary = orjson.loads((tmp_path / "s.json").read_bytes())
    assert (summary["lines"], summary["requests"]) == (0, 0)
    assert (await emulator.stats())["requests"] == {"single": 0, "batch": 0, "status": 0}
