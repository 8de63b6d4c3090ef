"""A property of the whole command line (issue 12, item 10).

Hypothesis generates argument vectors, ``DISPATCHER_*`` values, TOML files and input
lines for ``send``, ``status``, ``gateway``, ``receiver``, ``loadtest`` (and ``preview``,
``gen``, ``report``), mixing good and bad values. Each run is the real CLI in a
subprocess with a scrubbed environment, and must:

- end with a documented exit code (SPEC §6: 0, 1, 2, 3, 4, 99, 130/143);
- print no traceback and no "internal error";
- never show the API key, on stdout, stderr or in any file it wrote;
- for ``send`` ending 0 or 1: one result per non-blank input line.

Every run targets loopback only: ``send`` and ``status`` always get ``--base-url``
(the emulator started here, a closed loopback port, or a malformed URL that cannot
reach anything), and so do the environment and the files; servers listen on port 0
(or a bad port) of a loopback address and are stopped by SIGTERM once they listen.
Each run has a timeout and a memory limit; the example counts keep the whole module
within a few minutes, and ``derandomize`` makes CI reproducible.
"""

from __future__ import annotations

import importlib.util
import itertools
import json
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson
import pytest
from hypothesis import HealthCheck, Phase, event, given, settings
from hypothesis import strategies as st

from tests.support.cli import KEY
from tests.support.cli_property import (
    Outcome,
    check_common,
    closed_port,
    expected_lines,
    results_in,
    run_cli,
    run_server,
    scrubbed_env,
)
from tests.support.gateway_process import gateway_process

pytestmark = pytest.mark.timeout(300)

#: Local bug hunts: CLI_PROPERTY_HUNT=N runs N times the examples, with fresh randomness.
HUNT = int(os.environ.get("CLI_PROPERTY_HUNT", "0"))
PROPERTY = settings(
    deadline=None,
    derandomize=not HUNT,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    phases=[Phase.explicit, Phase.generate]
    if os.environ.get("CLI_PROPERTY_NO_SHRINK")
    else tuple(Phase),
)


def examples(count: int) -> int:
    return count * max(HUNT, 1)


# --- the world each run sees ------------------------------------------------------------

#: Placeholders replaced at run time: the emulator's base URL, a closed loopback port.
EMU = "<EMU>"
CLOSED = "<CLOSED>"


@dataclass(frozen=True, slots=True)
class Targets:
    emulator: str
    closed: str

    def fill(self, value: str) -> str:
        return value.replace(EMU, self.emulator).replace(CLOSED, self.closed)


@pytest.fixture(scope="module")
def targets() -> Iterator[Targets]:
    with gateway_process("--no-rate-limit", api_key=KEY) as base_url:
        yield Targets(base_url, f"http://127.0.0.1:{closed_port()}/raven")


#: Files every run's directory holds: the input, a config, key files, a template file,
#: a directory, and an earlier output.
KEY_FILE = "key.txt"
SECRET_FILES = (KEY_FILE, "key-crlf.txt")


def workdir_with(root: Path, *, input_data: bytes, toml: str | None) -> None:
    (root / "in.ndjson").write_bytes(input_data)
    (root / KEY_FILE).write_text(KEY + "\n")
    (root / "key-crlf.txt").write_bytes(b"\r\n  " + KEY.encode() + b"  \r\n")
    (root / "key-empty.txt").write_text("  \n")
    (root / "key-latin1.txt").write_bytes(b"caf\xe9-key")
    (root / "text.txt").write_text("Hello {0}\n")
    (root / "text-latin1.txt").write_bytes(b"Hol\xe1 {0}")
    (root / "dir").mkdir()
    (root / "old.ndjson").write_text('{"line": 1, "status": "QUEUE", "id": "x"}\n')
    if toml is not None:
        (root / "cfg.toml").write_text(toml)


def scratch() -> tempfile.TemporaryDirectory[str]:
    return tempfile.TemporaryDirectory(prefix="cli-property-")


# --- values -----------------------------------------------------------------------------


def mix(good: list[str], bad: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    """Good values three times in four, so that most runs get past the door."""
    return st.one_of(st.sampled_from(good), st.sampled_from(good), st.sampled_from(good), bad)


_ANY_NUMBERS = st.sampled_from(
    [
        *("0", "1", "2", "3", "-1", "16", "1000", "1.5", "0.5", "-0", "1e3"),
        *("nan", "NaN", "inf", "-inf", "Infinity", "1e400", "1e-400"),
        *("99999999999999999999", "abc", "", " 3 ", "0x10", "1_000", "½"),
    ]
)
NUMBERS = mix(["1", "3", "16", "100"], _ANY_NUMBERS)
#: Loopback-only or unusable URLs.
_ANY_URLS = st.sampled_from(
    [
        *(EMU, EMU, EMU, CLOSED, "http://", "https://", "ftp://127.0.0.1/raven"),
        *("http://[::1", "127.0.0.1:1", "http://127.0.0.1:99999/raven", "http://127.0.0.1:0/raven"),
        *("http://127.0.0.1:-1/raven", "http://[::1]:1/raven", "", " ", "http://:80/raven"),
        *("http://127.0.0.1:1/a b", "http://user:pw@127.0.0.1:1/raven", EMU + "/../x"),
    ]
)
URLS = mix([EMU], _ANY_URLS)
_ANY_PATHS = st.sampled_from(
    [
        *("out.ndjson", "out2.ndjson", "in.ndjson", "dir", "missing/x.ndjson", "-", ""),
        *("/dev/null", "cfg.toml", KEY_FILE, "text.txt", "old.ndjson", "dir/", "./out.ndjson"),
    ]
)
PATHS = mix(["out.ndjson", "out2.ndjson", "out3.json"], _ANY_PATHS)
_ANY_CODES = st.sampled_from(["12345", "COMPANY", "", "1", "ñandú", "A" * 40, "1234567", "+1"])
CODES = mix(["12345", "COMPANY"], _ANY_CODES)
_ANY_TEMPLATES = st.one_of(
    st.sampled_from(
        [
            *("Hi {0}, you owe {1}", "Hi {0}", "{0}{1}{2}", "plain", "", " ", "{", "}{", "{-1}"),
            *("{1000}", "{999}", "{" + "9" * 5000 + "}", "{00}", "€" * 200, "x" * 2000),
            *("😀{0}", "{0}" * 50, "Hi\r\n{0}", "%s %(x)s {x}"),
        ]
    ),
    st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=30),
)
TEMPLATES = mix(["Hi {0}", "Hi {0}, you owe {1}", "plain"], _ANY_TEMPLATES)
_ANY_WORDS = st.one_of(
    st.sampled_from(["x", "", "a@b.c", "not an email", "é" * 50, "1" * 300]),
    st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=8),
)
WORDS = mix(["x", "crm"], _ANY_WORDS)
_ANY_SWITCH_VALUES = st.sampled_from(["true", "false", "1", "0", "yes", "off", "maybe", "", "2"])
SWITCH_VALUES = mix(["true", "false"], _ANY_SWITCH_VALUES)
CHOICES = {
    "--segment-model": ["flat", "3gpp", "gsm", ""],
    "--endpoint": ["batch", "single", "both"],
    "--rate-unit": ["messages", "segments", "requests"],
    "--log-level": ["debug", "info", "warning", "error", "trace", "INFO"],
    "--log-format": ["text", "json", "xml"],
}
_ANY_RATE_ITEMS = st.sampled_from(
    [
        *("12345=inf", "12345=1000", "COMPANY=inf", "12345=0", "12345=-1", "12345=nan"),
        *("12345=1e400", "=5", "12345", "12345=", "x=y", "12345=abc", "COMPANY=Infinity"),
    ]
)
RATE_ITEMS = mix(["12345=inf", "COMPANY=1000"], _ANY_RATE_ITEMS)


def option(flag: str, values: st.SearchStrategy[str]) -> st.SearchStrategy[list[str]]:
    """``[flag, value]``, sometimes as ``flag=value``."""
    return st.tuples(values, st.booleans()).map(
        lambda vb: [f"{flag}={vb[0]}"] if vb[1] else [flag, vb[0]]
    )


def switch(*flags: str) -> st.SearchStrategy[list[str]]:
    return st.sampled_from(flags).map(lambda f: [f])


def flags(options: st.SearchStrategy[list[str]], most: int) -> st.SearchStrategy[list[str]]:
    """Up to ``most`` options, one after the other."""
    return st.lists(options, max_size=most).map(lambda groups: list(itertools.chain(*groups)))


#: Options every command refuses: unknown, abbreviated, a secret as a plain flag.
STRANGERS = st.sampled_from(
    [
        ["--api-key", KEY],
        [f"--api-key={KEY}"],
        ["--token", KEY],
        ["--bogus"],
        ["--res", "out.ndjson"],
        ["--batch", "5"],
        ["-x"],
        ["--"],
        ["extra-positional"],
        ["--help-me"],
    ]
)

SEND_OPTIONS = st.one_of(
    option("--from", CODES),
    option("--text", TEMPLATES),
    option("--text-file", st.sampled_from(["text.txt", "text-latin1.txt", "dir", "missing", ""])),
    option(
        "--config", st.sampled_from(["cfg.toml", "cfg.toml", "missing.toml", "dir", "in.ndjson"])
    ),
    option(
        "--api-key-file",
        st.sampled_from([KEY_FILE, "key-crlf.txt", "key-empty.txt", "key-latin1.txt", "dir"]),
    ),
    option("--base-url", URLS),
    option("--callbacks", st.sampled_from(["http://127.0.0.1:1/dr", "nonsense", "", "a,b"])),
    *(option(f, WORDS) for f in ("--connection", "--email", "--external-id", "--client-id")),
    *(option(f, st.sampled_from(v)) for f, v in CHOICES.items()),
    *(
        option(f, NUMBERS)
        for f in (
            "--max-segments",
            "--batch-size",
            "--linger-ms",
            "--concurrency",
            "--max-attempts",
            "--timeout",
            "--price-per-segment",
            "--grace-period",
        )
    ),
    option("--rate", RATE_ITEMS),
    *(option(f, PATHS) for f in ("--results", "--invalid", "--rejects", "--summary")),
    switch(
        *("--request-dr", "--no-request-dr", "--strict-numbers", "--no-strict-numbers"),
        *("--idempotency", "--retry-ambiguous", "--fsync", "--progress", "--no-progress"),
        *("--strict", "--dry-run", "--resume", "--force", "--dry-run"),
    ),
    STRANGERS,
)

# --- the environment and the config file --------------------------------------------------

#: ``DISPATCHER_*`` settings the runs may set, with values of every type; the retry
#: waits are fixed (see `send_env`) so that no run waits long.
ENV_VALUES = {
    "BASE_URL": URLS,
    "FROM": CODES,
    "SENDER": CODES,
    "TEXT": TEMPLATES,
    "ENDPOINT": st.sampled_from(["batch", "single", "x"]),
    "IDEMPOTENCY": SWITCH_VALUES,
    "TIMEOUT": NUMBERS,
    "CONNECT_TIMEOUT": NUMBERS,
    "MAX_BATCH": NUMBERS,
    "BATCH_SIZE": NUMBERS,
    "CONCURRENCY": NUMBERS,
    "LINGER_MS": NUMBERS,
    "MAX_BUFFERED": NUMBERS,
    "MAX_LINE_BYTES": NUMBERS,
    "MAX_SEGMENTS": NUMBERS,
    "MAX_ATTEMPTS": NUMBERS,
    "REQUEST_DR": SWITCH_VALUES,
    "STRICT": SWITCH_VALUES,
    "PROGRESS": SWITCH_VALUES,
    "RESULTS": PATHS,
    "INVALID": PATHS,
    "SUMMARY": PATHS,
    "LOG_LEVEL": st.sampled_from(["debug", "info", "loud", ""]),
    "IDEMPOTENCY_HEADER": st.sampled_from(["Idempotency-Key", "", "Bad Header", "X\r\nY"]),
    "PRICE_PER_SEGMENT": NUMBERS,
    "RATES": st.just("12345=1"),  # not settable from the environment: ignored
    "RESUME": SWITCH_VALUES,  # a flag only: ignored in the environment
}
ENVIRONMENTS = st.dictionaries(
    st.sampled_from(sorted(ENV_VALUES)), st.just(""), max_size=4
).flatmap(lambda chosen: st.fixed_dictionaries({name: ENV_VALUES[name] for name in chosen}))

TOML_VALUES = st.one_of(
    st.sampled_from(
        [
            *('"batch"', '"single"', '"flat"', '"3gpp"', '"info"', '"x"', '""', '"-"'),
            *("0", "1", "-1", "16", "1000", "2.5", "nan", "inf", "-inf", "1e400", "true", "false"),
            *("99999999999999999999", "[1, 2]", "{ a = 1 }", "1979-05-27", '"nan"', '"10"'),
            *('"out.ndjson"', '"in.ndjson"', '"dir"', '"12345"', '"Hi {0}"', '"{1000}"'),
        ]
    ),
    URLS.map(lambda u: orjson.dumps(u).decode()),
)
TOML_SECTIONS = {
    "gateway": ["base_url", "endpoint", "max_batch", "idempotency", "timeout", "connect_timeout"],
    "message": ["from", "sender", "text", "request_dr", "segment_model", "max_segments", "email"],
    "input": ["max_line_bytes", "strict_numbers"],
    "sending": ["batch_size", "linger_ms", "max_buffered", "concurrency", "rate_unit", "bogus"],
    "retry": ["max_attempts", "retry_ambiguous"],
    "output": ["results", "invalid", "rejects", "summary", "strict", "price_per_segment"],
    "run": ["grace_period", "log_level", "log_format", "resume"],
    "sending.rates": ["12345", "COMPANY", '"1 2"'],
    "sending.kind_rates": ["shortcode", "alphanumeric", "carrier-pigeon"],
    "nonsense": ["x"],
}


@st.composite
def toml_documents(draw: st.DrawFn) -> str:
    """A config file: mostly well-formed TOML with good or bad values, sometimes not
    TOML at all."""
    if draw(st.integers(0, 9)) == 0:
        return draw(
            st.sampled_from(
                ["[gateway\n", "x = = 1\n", "[message]\nfrom = 'a'\nfrom = 'b'\n", "\xff", "🙂"]
            )
        )
    lines = []
    if draw(st.booleans()):
        lines.append(f'api_key_file = "{draw(st.sampled_from([KEY_FILE, "missing", "dir"]))}"')
    for section in draw(st.lists(st.sampled_from(sorted(TOML_SECTIONS)), max_size=3, unique=True)):
        lines.append(f"[{section}]")
        for name in draw(
            st.lists(st.sampled_from(TOML_SECTIONS[section]), max_size=3, unique=True)
        ):
            lines.append(f"{name} = {draw(TOML_VALUES)}")
    return "\n".join(lines) + "\n"


# --- input lines ------------------------------------------------------------------------

NUMBERS_TO = st.sampled_from(
    [
        *("+525500000000", "525511111111", "+1 (500) 555-0006", "12ab", "", "+", "+0123456"),
        *("+" + "9" * 20, "+15005550006", "00525500000000"),
    ]
)
PARAM = st.one_of(
    st.sampled_from(["Ana", "", "€", "😀", "{0}", "x" * 500]),
    st.integers(-(2**70), 2**70),
    st.sampled_from([0, 10.65, 1e308, -0.0, 2**64, 10**40, True, None, [1], {"a": 1}]),
)


@st.composite
def recipients(draw: st.DrawFn) -> bytes:
    """One input line (without its newline): an object that may be right or wrong."""
    line: dict[str, object] = {"to": draw(st.one_of(NUMBERS_TO, st.sampled_from([5, None])))}
    if draw(st.booleans()):
        line["params"] = draw(st.lists(PARAM, max_size=3))
    if draw(st.integers(0, 4)) == 0:
        line["text"] = draw(TEMPLATES)
    if draw(st.integers(0, 5)) == 0:
        line["from"] = draw(CODES)
    if draw(st.integers(0, 5)) == 0:
        line["ref"] = draw(st.sampled_from(["crm-1", 2**80, {"deep": [1]}, None]))
    if draw(st.integers(0, 8)) == 0:
        line[draw(st.sampled_from(["externalId", "email", "clientId", "bogus"]))] = draw(
            st.sampled_from(["x", 1, None, ["a"]])
        )
    # json, not orjson: integers beyond 64 bits are written exactly.
    return json.dumps(line, ensure_ascii=False).encode("utf-8", "surrogatepass")


RAW_LINES = st.sampled_from(
    [
        *(b"", b"   ", b"\t", b"not json", b"{", b"[]", b"null", b"42", b'"to"', b"\xff\xfe\xfd"),
        b'{"to": "+525500000000", "params": [123456789012345678901234567890]}',
        b'{"to": "+525500000000", "params": [1e400]}',
        b'{"to": "+525500000000", "params": [NaN]}',
        b'{"to": "+525500000000", "text": "{' + b"7" * 4000 + b'}"}',
        b'{"to": "+525500000000", "params": ["\xc3\x28"]}',
        b'{"to": "+525500000000"} trailing',
        b'{"to": "+525500000000", "to": "+15005550006"}',
        b'{"to": "+525500000000", "params": ["' + b"x" * 70_000 + b'"]}',
    ]
)


@st.composite
def input_files(draw: st.DrawFn) -> bytes:
    """A recipients file: lines, with LF or CRLF endings, perhaps a BOM, perhaps no
    final newline."""
    lines = draw(st.lists(st.one_of(recipients(), recipients(), RAW_LINES), max_size=8))
    ending = draw(st.sampled_from([b"\n", b"\r\n"]))
    data = b"".join(line + ending for line in lines)
    if lines and draw(st.booleans()):
        data = data[: -len(ending)]
    if draw(st.integers(0, 5)) == 0:
        data = b"\xef\xbb\xbf" + data
    return data


# --- send -------------------------------------------------------------------------------


def send_env(generated: dict[str, str], *, with_key: bool) -> dict[str, str]:
    """The run's environment: the generated ``DISPATCHER_*`` values, the key (unless the
    run must find it elsewhere), and retry waits short enough for a test."""
    env = {f"DISPATCHER_{name}": value for name, value in generated.items()}
    if with_key:
        env["DISPATCHER_API_KEY"] = KEY
    env["DISPATCHER_RETRY_MAX_WAIT"] = "0.05"
    env["DISPATCHER_RETRY_DEADLINE"] = "3"
    return scrubbed_env(env)


def effective(flag: str, argv: list[str], env: dict[str, str], toml: dict[str, str]) -> str | None:
    """The value a setting takes by SPEC §7's precedence (flags > env > file), as far
    as this test generates it (the last flag wins)."""
    value = None
    for i, arg in enumerate(argv):
        if arg == flag and i + 1 < len(argv):
            value = argv[i + 1]
        elif arg.startswith(flag + "="):
            value = arg.split("=", 1)[1]
    if value is not None:
        return value
    name = flag.removeprefix("--")
    if (env_value := env.get(f"DISPATCHER_{name.upper()}")) is not None:
        return env_value
    return toml.get(name)


def check_send(outcome: Outcome, root: Path, input_data: bytes, results_path: str | None) -> None:
    if outcome.code not in (0, 1) or results_path == "/dev/null":
        return
    if results_path in (None, "-"):
        data = outcome.stdout
    else:
        target = root / results_path
        assert target.is_file(), f"exit {outcome.code} but no results file\n{outcome.describe()}"
        data = target.read_bytes()
    got = sorted(results_in(data))
    want = expected_lines(input_data)
    assert got == want, (
        f"results for lines {got}, expected one for each of {want}\n{outcome.describe()}"
    )


def toml_outputs(document: str) -> dict[str, str]:
    """The [output] results path of a generated config file, when it has one."""
    import tomllib

    try:
        parsed = tomllib.loads(document)
    except tomllib.TOMLDecodeError:
        return {}
    output = parsed.get("output")
    if isinstance(output, dict) and isinstance(output.get("results"), str):
        return {"results": output["results"]}
    return {}


@st.composite
def send_runs(draw: st.DrawFn) -> tuple[list[str], dict[str, str], str | None, bytes, bool]:
    """(argv, env, toml, input, stdin?) of one ``send`` run."""
    stdin = draw(st.integers(0, 5)) == 0
    argv = ["send", "-" if stdin else "in.ndjson"]
    # The usual options first, so that most runs get past the door and send.
    if draw(st.integers(0, 4)):
        argv += ["--from", "12345", "--text", "Hi {0}"]
    argv += ["--rate", "1234567=inf"]  # the long code's 1/s would make a run long
    argv += draw(flags(SEND_OPTIONS, 6))
    # Whatever was generated, the last word on the gateway is a loopback URL.
    argv += ["--base-url", draw(URLS)]
    toml = draw(st.none() | toml_documents())
    if toml is not None and draw(st.booleans()):
        argv += ["--config", "cfg.toml"]
    env = draw(ENVIRONMENTS)
    return argv, env, toml, draw(input_files()), stdin


@settings(PROPERTY, max_examples=examples(120))
@given(run=send_runs(), with_key=st.integers(0, 7))
def test_send(
    targets: Targets, run: tuple[list[str], dict[str, str], str | None, bytes, bool], with_key: int
) -> None:
    argv, generated, toml, input_data, stdin = run
    argv = [targets.fill(a) for a in argv]
    generated = {k: targets.fill(v) for k, v in generated.items()}
    with scratch() as tmp:
        root = Path(tmp)
        workdir_with(root, input_data=input_data, toml=toml)
        env = send_env(generated, with_key=bool(with_key))
        outcome = run_cli(argv, cwd=root, env=env, stdin=input_data if stdin else None)
        event(f"exit {outcome.code}")
        check_common(outcome, root, secret_files=SECRET_FILES)
        file_values = toml_outputs(toml) if toml is not None and "--config" in argv else {}
        results_path = effective("--results", argv, env, file_values)
        check_send(outcome, root, input_data, results_path)


# --- status -----------------------------------------------------------------------------

IDS = st.one_of(
    st.sampled_from(
        [
            *("507f1f77b", "abc", "../../v3/messages/batch", "a/b", "?x=1", "#frag", "%2e%2e"),
            *("", " ", "-", "--", "é", "x" * 3000, "a\tb", "..", "."),
        ]
    ),
    st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=6),
)
STATUS_OPTIONS = st.one_of(
    option("--rate", NUMBERS),
    option("--sample", NUMBERS),
    option("--results", st.sampled_from(["old.ndjson", "in.ndjson", "dir", "missing", "key.txt"])),
    option("--config", st.sampled_from(["cfg.toml", "missing.toml", "dir"])),
    option("--api-key-file", st.sampled_from([KEY_FILE, "key-latin1.txt", "key-empty.txt", "dir"])),
    option("--base-url", URLS),
    STRANGERS,
)


@settings(PROPERTY, max_examples=examples(25))
@given(
    ids=st.lists(IDS, max_size=3),
    options=flags(STATUS_OPTIONS, 4),
    url=URLS,
    env=ENVIRONMENTS,
    toml=st.none() | toml_documents(),
)
def test_status(
    targets: Targets,
    ids: list[str],
    options: list[str],
    url: str,
    env: dict[str, str],
    toml: str | None,
) -> None:
    argv = [targets.fill(a) for a in ["status", *options, "--base-url", url, "--", *ids]]
    generated = {k: targets.fill(v) for k, v in env.items()}
    with scratch() as tmp:
        root = Path(tmp)
        workdir_with(root, input_data=b"", toml=toml)
        outcome = run_cli(argv, cwd=root, env=send_env(generated, with_key=True))
        check_common(outcome, root, secret_files=SECRET_FILES)


# --- servers: gateway, receiver, loadtest ----------------------------------------------------

HOSTS = st.sampled_from(
    ["127.0.0.1", "127.0.0.1", "::1", "localhost", "999.1.1.1", "", "127.0.0.1 "]
)
PORTS = st.sampled_from(["0", "0", "0", "-1", "65536", "99999", "abc", "", "1e3", "0x0"])
SHARES = st.sampled_from(["0", "0.1", "1", "1.5", "-0.1", "nan", "inf", "x"])
GATEWAY_OPTIONS = st.one_of(
    option("--host", HOSTS),
    option("--port", PORTS),
    option("--api-key", st.sampled_from(["k", "", " "])),
    option("--owner", WORDS),
    option("--max-batch", NUMBERS),
    option("--max-segments", NUMBERS),
    option("--deny-code", CODES),
    option("--invalid-prefix", st.sampled_from(["52", "", "x", "+1"])),
    option("--rate", RATE_ITEMS),
    option("--ledger", st.sampled_from(["full", "counts", "none"])),
    option("--seed", NUMBERS),
    option("--dr-delay-ms", NUMBERS),
    *(option(f, SHARES) for f in ("--dr-undeliv", "--fail-429", "--drop-after", "--fail-503")),
    *(option(f, NUMBERS) for f in ("--latency-ms", "--jitter-ms", "--fault-retry-after")),
    switch("--no-rate-limit", "--flat-single", "--access-log"),
    STRANGERS,
)


@settings(PROPERTY, max_examples=examples(25))
@given(
    options=flags(GATEWAY_OPTIONS, 4),
    key_in_env=st.booleans(),
)
def test_gateway(options: list[str], key_in_env: bool) -> None:
    argv = ["gateway", "--port", "0", *options]
    with scratch() as tmp:
        root = Path(tmp)
        env = scrubbed_env({"DISPATCHER_API_KEY": KEY} if key_in_env else {})
        outcome = run_server(argv, cwd=root, env=env)
        check_common(outcome, root)
        if outcome.stopped:
            assert outcome.code in (0, 143), f"stopped by SIGTERM\n{outcome.describe()}"


RECEIVER_OPTIONS = st.one_of(
    option("--host", HOSTS),
    option("--port", PORTS),
    option("--out", PATHS),
    option("--malformed", PATHS),
    option("--flush-interval", NUMBERS),
    STRANGERS,
)


@settings(PROPERTY, max_examples=examples(25))
@given(
    out=st.one_of(st.just(["--out", "dr.ndjson"]), st.just([])),
    options=flags(RECEIVER_OPTIONS, 3),
    poke=st.sampled_from([None, "/", "/dr/x"]),
)
def test_receiver(out: list[str], options: list[str], poke: str | None) -> None:
    argv = ["receiver", "--port", "0", *out, *options]
    with scratch() as tmp:
        root = Path(tmp)
        workdir_with(root, input_data=b'{"to": "+525500000000"}\n', toml=None)
        outcome = run_server(argv, cwd=root, env=scrubbed_env({}), poke=poke)
        check_common(outcome, root, secret_files=SECRET_FILES)
        if outcome.stopped:
            assert outcome.code in (0, 143), f"stopped by SIGTERM\n{outcome.describe()}"


SHORT = st.sampled_from(["0.3s", "200ms", "0s", "-1s", "nan", "inf", "abc", "", "1e400s", "0.1"])
THRESHOLDS = st.sampled_from(
    [
        *("p99<250ms", "p(95)<=0.2s", "max<1s", "mean<50ms", "error_rate<0.1%", "rate>=0.95"),
        *("bogus", "p999<1s", "p99<nanms", "max<infs", "p(101)<1s", "error_rate<200%", ""),
    ]
)
LOADTEST_OPTIONS = st.one_of(
    option("--duration", SHORT),
    option("--warmup", SHORT),
    option("--drain", SHORT),
    option("--timeout", SHORT),
    option("--rate", st.sampled_from(["50", "0", "-1", "nan", "inf", "1e4", "abc", "1e400"])),
    option("--rate-unit", st.sampled_from(["requests", "recipients", "x"])),
    option("--batch-size", NUMBERS),
    option("--concurrency", NUMBERS),
    option("--seed", NUMBERS),
    option("--from", CODES),
    option("--text", TEMPLATES),
    option("--input", st.sampled_from(["in.ndjson", "missing", "dir", "key-latin1.txt"])),
    option("--base-url", st.sampled_from([CLOSED, "http://", "ftp://127.0.0.1", "http://[::1"])),
    option("--api-key-file", st.sampled_from([KEY_FILE, "key-empty.txt", "dir"])),
    option("--threshold", THRESHOLDS),
    option("--report", PATHS),
    option("--plot", st.sampled_from(["plot.png", "dir", "in.ndjson", "missing/p.png"])),
    *(option(f, SHARES) for f in ("--fail-429", "--fail-500-after", "--drop-before")),
    option("--latency-ms", st.sampled_from(["0", "5", "-1", "nan", "inf"])),
    switch("--json", "--quiet", "--synthetic"),
    STRANGERS,
)


@settings(PROPERTY, max_examples=examples(20))
@given(
    options=flags(LOADTEST_OPTIONS, 4),
    input_data=input_files(),
)
def test_loadtest(targets: Targets, options: list[str], input_data: bytes) -> None:
    # Short by default; the generated durations are short or invalid.
    argv = ["loadtest", "--duration", "0.3s", "--drain", "1s", "--timeout", "1s", "--rate", "50"]
    argv = [targets.fill(a) for a in [*argv, *options]]
    with scratch() as tmp:
        root = Path(tmp)
        workdir_with(root, input_data=input_data, toml=None)
        outcome = run_cli(argv, cwd=root, env=send_env({}, with_key=True))
        check_common(outcome, root, secret_files=SECRET_FILES)


# --- preview, gen, report: offline commands, cheaply ----------------------------------------

PREVIEW_OPTIONS = st.one_of(
    option("--from", CODES),
    option("--text", TEMPLATES),
    option("--text-file", st.sampled_from(["text.txt", "text-latin1.txt", "dir", "missing"])),
    option("--config", st.sampled_from(["cfg.toml", "missing.toml", "dir"])),
    *(option(f, NUMBERS) for f in ("--limit", "--sample", "--seed", "--max-segments")),
    option("--price-per-segment", NUMBERS),
    option("--price", st.sampled_from(["52=0.01", "1=nan", "=1", "x", "52=-1", "52=inf"])),
    option("--segment-model", st.sampled_from(["flat", "3gpp", "x"])),
    switch("--json", "--smart-encoding", "--transliterate", "--strict-numbers"),
    STRANGERS,
)
GEN_OPTIONS = st.one_of(
    option(
        "--count",
        st.sampled_from(["0", "1", "5", "-1", "nan", "1e3", "abc", "99999999999999999999999"]),
    ),
    option("--seed", NUMBERS),
    *(
        option(f, st.sampled_from(["0", "0.5", "1", "1.5", "-0.1", "nan", "inf", "x"]))
        for f in ("--invalid-share", "--unicode-share", "--ref-share", "--overrides-share")
    ),
    STRANGERS,
)
REPORT_OPTIONS = st.one_of(
    option("--results", st.sampled_from(["old.ndjson", "in.ndjson", "dir", "missing", "-"])),
    option(
        "--dr", st.sampled_from(["old.ndjson", "in.ndjson", "dir", "missing", "key-latin1.txt"])
    ),
    option("--out", PATHS),
    switch("--json"),
    STRANGERS,
)
OFFLINE = st.one_of(
    st.tuples(st.just(["preview", "in.ndjson", "--from", "12345"]), flags(PREVIEW_OPTIONS, 4)),
    st.tuples(st.just(["preview", "-", "--text", "Hi {0}"]), flags(PREVIEW_OPTIONS, 4)),
    st.tuples(st.just(["gen", "--count", "3"]), flags(GEN_OPTIONS, 3)),
    st.tuples(
        st.just(["report", "--results", "old.ndjson", "--dr", "in.ndjson"]),
        flags(REPORT_OPTIONS, 3),
    ),
)


@settings(PROPERTY, max_examples=examples(20))
@given(run=OFFLINE, input_data=input_files(), env=ENVIRONMENTS, toml=st.none() | toml_documents())
def test_offline_commands(
    run: tuple[list[str], list[str]], input_data: bytes, env: dict[str, str], toml: str | None
) -> None:
    head, options = run
    argv = [*head, *options]
    with scratch() as tmp:
        root = Path(tmp)
        workdir_with(root, input_data=input_data, toml=toml)
        outcome = run_cli(argv, cwd=root, env=send_env(env, with_key=True), stdin=input_data)
        event(f"{head[0]} exit {outcome.code}")
        check_common(outcome, root, secret_files=SECRET_FILES)


# --- what the property found, kept as regression tests ---------------------------------------

HAS_MATPLOTLIB = importlib.util.find_spec("matplotlib") is not None

#: (argv, what it did before its fix): each must now end like any other run.
FOUND = [
    pytest.param(
        ["status", "--rate", "inf", "--base-url", CLOSED, "x"],
        "ZeroDivisionError (the limiter's period is 1/rate)",
        id="status --rate inf",
    ),
    pytest.param(
        ["status", "--results", "missing", "--base-url", CLOSED],
        "InputError traceback: cannot read missing",
        id="status --results MISSING",
    ),
    pytest.param(
        ["loadtest", "--duration", "0.3s", "--quiet", "--plot", "in.ndjson"],
        "ValueError from matplotlib after the run: no .ndjson image format",
        id="loadtest --plot in.ndjson",
        marks=pytest.mark.skipif(not HAS_MATPLOTLIB, reason="matplotlib is not installed"),
    ),
    # Found by the property too, and fixed on branches not yet merged into main.
    pytest.param(
        [
            "send",
            "in.ndjson",
            "--from",
            "12345",
            "--text",
            "Hi",
            "--api-key-file",
            "key-latin1.txt",
        ],
        "UnicodeDecodeError traceback reading the key file",
        id="send --api-key-file NOT-UTF-8",
    ),
    pytest.param(
        ["send", "in.ndjson", "--from", "12345", "--text", "Hi", "--results", "in.ndjson"],
        "the input truncated to 0 bytes, exit 0 with no result",
        id="send --results INPUT",
    ),
]


INPUT = b'{"to": "+525500000000"}\n'


@pytest.mark.parametrize(("argv", "before"), FOUND)
def test_found(targets: Targets, argv: list[str], before: str) -> None:
    with scratch() as tmp:
        root = Path(tmp)
        workdir_with(root, input_data=INPUT, toml=None)
        argv = [targets.fill(a) for a in [*argv, "--base-url", EMU]]
        if argv[0] != "send":
            argv = argv[:-2]
        env = send_env({}, with_key=True)
        outcome = run_cli(argv, cwd=root, env=env)
        check_common(outcome, root, secret_files=SECRET_FILES)
        if argv[0] == "send":
            check_send(outcome, root, INPUT, effective("--results", argv, env, {}))
