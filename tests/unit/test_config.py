"""Configuration: precedence flags > env > file > defaults, and clear errors (exit 2)."""

import math
import os
import re
from collections.abc import Iterator
from dataclasses import fields
from pathlib import Path

import orjson
import pytest

from dispatcher.config import (
    DEFAULT_BASE_URL,
    KEYS,
    Config,
    Key,
    Number,
    Secret,
    find_api_key,
    load,
    read_secret_file,
    validate,
)
from dispatcher.errors import ConfigError


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "c.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults_follow_the_spec() -> None:
    config = load(env={})
    assert config.base_url == DEFAULT_BASE_URL
    assert config.batch_size == 1000
    assert config.linger_ms == 50
    assert config.concurrency == 16
    assert config.max_message_segments == 10
    assert config.max_line_bytes == 64 * 1024
    assert dict(config.kind_rates) == {"longcode": 1, "shortcode": 100, "alphanumeric": 100}
    assert config.idempotency is False
    assert config.api_key is None


def test_file_env_flags_precedence(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
[gateway]
base_url = "http://file/raven"
timeout = 5
[sending]
concurrency = 4
batch_size = 10
[sending.rates]
"12345" = 50
COMPANY = "inf"
[message]
from = "12345"
text = "Hi {0}"
""",
    )
    env = {"DISPATCHER_CONCURRENCY": "8", "DISPATCHER_BASE_URL": "http://env/raven"}
    config = load(
        config_file=path, env=env, flags={"base_url": "http://flag/raven", "rates": {"99": 2.0}}
    )
    assert config.base_url == "http://flag/raven"  # flag beats env beats file
    assert config.concurrency == 8  # env beats file
    assert config.batch_size == 10  # file beats default
    assert config.timeout == 5.0
    assert config.sender == "12345"
    assert config.text == "Hi {0}"
    assert dict(config.rates) == {"12345": 50.0, "COMPANY": float("inf"), "99": 2.0}


def test_unknown_key_names_the_key_and_suggests(tmp_path: Path) -> None:
    path = write(tmp_path, "[sending]\nconcurency = 4\n")
    with pytest.raises(
        ConfigError, match=r"unknown key 'concurency' in \[sending\].*'concurrency'"
    ):
        load(config_file=path, env={})


def test_unknown_section(tmp_path: Path) -> None:
    path = write(tmp_path, "[sendin]\nconcurrency = 4\n")
    with pytest.raises(ConfigError, match=r"unknown section \[sendin\].*'sending'"):
        load(config_file=path, env={})


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[sending]\nconcurrency = 0\n", r"\[sending\] concurrency must be a whole number from 1"),
        ("[sending]\nconcurrency = 'many'\n", "concurrency must be a whole number"),
        ("[sending]\nrate_unit = 'bytes'\n", "rate_unit must be one of messages, segments"),
        ("[sending.rates]\nX = -1\n", "positive rate"),
        ("[gateway]\nbase_url = 'ftp://x'\n", "base_url must start with http"),
        ("[gateway]\nidempotency = 'maybe'\n", "idempotency must be true or false"),
        ("[sending\n", "not valid TOML"),
    ],
)
def test_bad_values_say_what_to_fix(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load(config_file=write(tmp_path, text), env={})


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load(config_file=tmp_path / "nope.toml", env={})


def test_env_value_is_validated() -> None:
    with pytest.raises(ConfigError, match="environment DISPATCHER_BATCH_SIZE"):
        load(env={"DISPATCHER_BATCH_SIZE": "lots"})


def test_api_key_from_env_and_file(tmp_path: Path) -> None:
    assert load(env={"DISPATCHER_API_KEY": " k1 \n"}).api_key == Secret("k1")
    key_file = tmp_path / "key"
    key_file.write_text("k2\n", encoding="utf-8")
    config = load(env={"DISPATCHER_API_KEY": "k1"}, api_key_file=key_file)
    assert config.api_key == Secret("k2")  # the explicit file wins over the environment
    (tmp_path / "empty").write_text("\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="is empty"):
        load(env={}, api_key_file=tmp_path / "empty")


def test_the_key_never_shows() -> None:
    config = load(env={"DISPATCHER_API_KEY": "sk-very-secret"})
    assert "sk-very-secret" not in repr(config)
    assert "sk-very-secret" not in str(config.api_key)
    assert config.api_key is not None
    assert config.api_key.reveal() == "sk-very-secret"


def test_resume_and_force_contradict() -> None:
    with pytest.raises(ConfigError, match="contradict"):
        validate(Config(resume=True, force=True))


def test_partial_kind_rates_keep_the_other_defaults(tmp_path: Path) -> None:
    config = load(config_file=write(tmp_path, "[sending.kind_rates]\nlongcode = 2\n"), env={})
    assert dict(config.kind_rates) == {"longcode": 2, "shortcode": 100, "alphanumeric": 100}


def test_shipped_configs_are_valid() -> None:
    root = Path(__file__).resolve().parents[2] / "configs"
    files = sorted(root.glob("*.toml"))
    assert files, "configs/*.toml are missing"
    for path in files:
        load(config_file=path, env={})


def test_request_size_and_single() -> None:
    assert Config().request_size == 1000
    assert Config(batch_size=5000).request_size == 1000  # the gateway's max_batch
    assert Config(batch_size=5000, max_batch=2000).request_size == 2000
    assert Config(endpoint="single", batch_size=500).request_size == 1
    assert Config(endpoint="single").single
    assert Config(batch_size=1).single
    assert not Config().single


#: What a file may set, [section] by [section]: the contract of configs/default.toml.
FILE_KEYS = {
    "gateway": "base_url endpoint max_batch idempotency idempotency_header timeout connect_timeout",
    "message": "from text request_dr callbacks connection email external_id client_id "
    "segment_model max_segments smart_encoding transliterate",
    "input": "max_line_bytes strict_numbers",
    "policy": "suppress dedupe max_messages max_job_segments max_cost",
    "schedule": "window outside_window default_tz start_at expire_at ttl",
    "sending": "batch_size linger_ms max_buffered concurrency rates kind_rates rate_unit",
    "quota": "quota_url quota_namespace caps_key account_rate quota_fallback quota_peers "
    "redis_password_file",
    "metrics": "metrics_port metrics_host",
    "retry": "max_attempts retry_max_wait retry_deadline retry_ambiguous",
    "output": "results invalid rejects summary fsync progress strict price_per_segment prices",
    "run": "workers shard grace_period log_level log_format",
}


def test_every_field_has_a_key_and_the_file_keys_are_the_documented_ones() -> None:
    assert list(KEYS) == [f.name for f in fields(Config)]
    in_file = {
        section: " ".join(k.file_name for k in KEYS.values() if k.file and k.section == section)
        for section in FILE_KEYS
    }
    assert in_file == FILE_KEYS
    assert {k.name for k in KEYS.values() if not k.file} == {
        "api_key",
        "redis_password",
        "resume",
        "force",
        "dry_run",
        "explain",
        "now",
    }
    assert [k.name for k in KEYS.values() if k.secret] == ["api_key", "redis_password"]
    default = (Path(__file__).resolve().parents[2] / "configs" / "default.toml").read_text()
    for section, names in FILE_KEYS.items():
        assert f"[{section}]" in default
        for name in names.split():
            assert name in default, name


def test_flag_only_and_secret_keys_stay_out_of_files_and_env(tmp_path: Path) -> None:
    for text in ("[run]\nresume = true\n", "[gateway]\napi_key = 'k'\n"):
        with pytest.raises(ConfigError, match="unknown key"):
            load(config_file=write(tmp_path, text), env={})
    config = load(env={"DISPATCHER_RESUME": "1", "DISPATCHER_DRY_RUN": "1"})
    assert (config.resume, config.dry_run) == (False, False)


def test_sender_spellings() -> None:
    env = {"DISPATCHER_SENDER": "111", "DISPATCHER_FROM": "222"}
    assert load(env=env).sender == "222"  # the file's spelling wins
    assert load(env={"DISPATCHER_SENDER": "111"}).sender == "111"


def test_sender_in_the_file_either_way(tmp_path: Path) -> None:
    assert load(config_file=write(tmp_path, "[message]\nsender = '9'\n"), env={}).sender == "9"
    with pytest.raises(ConfigError, match="did you mean 'from'"):
        load(config_file=write(tmp_path, "[message]\nfrm = '9'\n"), env={})


def test_find_api_key_file_then_env(tmp_path: Path) -> None:
    key_file = tmp_path / "key"
    key_file.write_text(" k-file \n", encoding="utf-8")
    assert find_api_key(key_file, {"DISPATCHER_API_KEY": "k-env"}) == Secret("k-file")
    assert find_api_key(None, {"DISPATCHER_API_KEY": " k-env\n"}) == Secret("k-env")
    assert find_api_key(None, {"DISPATCHER_API_KEY": "  "}) is None
    assert find_api_key(None, {}) is None


def test_key_file_flag_beats_the_file_s_key_file(tmp_path: Path) -> None:
    (tmp_path / "a").write_text("from-config\n", encoding="utf-8")
    (tmp_path / "b").write_text("from-flag\n", encoding="utf-8")
    path = write(tmp_path, f"api_key_file = '{tmp_path / 'a'}'\n")
    assert load(config_file=path, env={}).api_key == Secret("from-config")
    config = load(config_file=path, env={}, api_key_file=tmp_path / "b")
    assert config.api_key == Secret("from-flag")


# --- validation at the door: the same in flags, environment and file -------------------

NUMBER_KEYS = [key for key in KEYS.values() if isinstance(key.parse, Number)]
BAD_TEXT = ["nan", "NaN", "inf", "-inf", "Infinity", "1e400", "-1", "-0", "-0.0", "x", "", "1_0x"]


def test_every_number_of_the_config_has_bounds() -> None:
    assert {key.name for key in NUMBER_KEYS} == {
        key.name for key in KEYS.values() if key.kind in (int, float)
    }
    assert len(NUMBER_KEYS) >= 14


def sources(key: Key, value: str) -> Iterator[tuple[str, dict[str, object]]]:
    """(what the error must name, load's arguments) for each place the value can be."""
    yield re.escape(key.option), {"flags": {key.name: value}, "env": {}}
    if key.env_var is not None:
        yield f"environment {key.env_var}", {"env": {key.env_var: value}}


@pytest.mark.parametrize("key", NUMBER_KEYS, ids=lambda key: key.name)
def test_a_bad_number_is_refused_naming_where_it_came_from(key: Key, tmp_path: Path) -> None:
    parse = key.parse
    assert isinstance(parse, Number)
    above = str(int(parse.high) + 1) if parse.high < 1e15 else None
    for value in [*BAD_TEXT, *([above] if above else [])]:
        for where, arguments in sources(key, value):
            with pytest.raises(ConfigError, match=f"^{where} must be a"):
                load(**arguments)  # type: ignore[arg-type]
        # as a TOML string: the file's own numbers are the next test (TOML's -0 is 0)
        path = write(
            tmp_path, f"[{key.section}]\n{key.file_name} = {orjson.dumps(value).decode()}\n"
        )
        with pytest.raises(ConfigError, match=rf"c\.toml: \[{key.section}\] {key.file_name} must"):
            load(config_file=path, env={})


@pytest.mark.parametrize("key", NUMBER_KEYS, ids=lambda key: key.name)
def test_toml_s_own_infinities_and_huge_numbers_are_refused(key: Key, tmp_path: Path) -> None:
    huge = "99999999999999999999999"
    for literal in ("inf", "+inf", "-inf", "nan", "-0.0", "-1", "1e400", huge, "true", "[1]"):
        if literal == huge and math.isinf(key.parse.high):  # type: ignore[attr-defined]
            continue  # no upper bound but finiteness (a price)
        path = write(tmp_path, f"[{key.section}]\n{key.file_name} = {literal}\n")
        with pytest.raises(ConfigError, match=rf"\[{key.section}\] {key.file_name} must"):
            load(config_file=path, env={})


#: What a key needs beside it to be valid at all (a cost cap needs a price).
NEEDS = {"max_cost": {"price_per_segment": "0.01"}}


@pytest.mark.parametrize("key", NUMBER_KEYS, ids=lambda key: key.name)
def test_the_bounds_themselves_are_accepted(key: Key) -> None:
    parse = key.parse
    assert isinstance(parse, Number)
    low = parse.low if not parse.above else parse.low + (1 if parse.kind is int else 0.001)
    for value in (low, min(parse.high, 1e9)):
        text = str(int(value)) if parse.kind is int else repr(float(value))
        config = load(flags={key.name: text, **NEEDS.get(key.name, {})}, env={})
        assert getattr(config, key.name) == pytest.approx(value)


def test_zero_only_where_it_means_none() -> None:
    zero = set()
    for key in NUMBER_KEYS:
        try:
            load(flags={key.name: "0", **NEEDS.get(key.name, {})}, env={})
        except ConfigError:
            continue
        zero.add(key.name)
    # a cap of 0 sends nothing: every line is NOT_SENT, resumable with a higher cap
    caps = {"max_messages", "max_job_segments", "max_cost"}
    # a metrics port of 0 is any free port (logged), as for every server here
    assert zero == {
        *("linger_ms", "retry_max_wait", "grace_period", "price_per_segment", "metrics_port"),
        *caps,
    }


@pytest.mark.parametrize(
    "rate", ["nan", "-1", "-0", "0", "0.0001", "x", "-inf", ""], ids=lambda rate: rate or "empty"
)
def test_rates_are_positive_or_inf(rate: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^--rate 12345 must be a positive rate"):
        load(flags={"rates": {"12345": rate}}, env={})
    path = write(tmp_path, f'[sending.rates]\n"12345" = "{rate}"\n')
    with pytest.raises(ConfigError, match=r"\[sending\.rates\] 12345 must be a positive rate"):
        load(config_file=path, env={})
    path = write(tmp_path, f'[sending.kind_rates]\nlongcode = "{rate}"\n')
    with pytest.raises(ConfigError, match=r"\[sending\.kind_rates\] longcode must be"):
        load(config_file=path, env={})
    config = load(flags={"rates": {"12345": "inf", "1": "1e400", "2": 0.5}}, env={})
    assert dict(config.rates) == {"12345": math.inf, "1": math.inf, "2": 0.5}


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("http://", "needs a host"),
        ("http:///x", "needs a host"),
        ("https://:80", "needs a host"),
        ("https://:80/raven", "needs a host"),
        ("ftp://example.com/raven", "must start with http:// or https://"),
        ("example.com/raven", "must start with http:// or https://"),
        ("http:/example.com", "must start with http:// or https://"),
        ("http://example.com:99999/raven", "port"),
        ("http://example.com:0/raven", "port"),
        ("http://example.com:-1/raven", "port"),
        ("http://example.com:x/raven", "port"),
        ("http://[::1/raven", "IPv6"),
        ("http://exa mple.com/raven", "spaces"),
        ("http://example.com/raven\n", "control characters"),
        ("http://example.com/raven?key=1", "query"),
        ("http://example.com/raven#top", "fragment"),
        ("http://example.com/raven?", "query"),
        ("http://xn--a.com/raven", "not a valid name"),
        ("http://ex\u200bample.com/raven", "not a valid name"),
        ("http://[zz]/raven", "IPv6"),
    ],
)
def test_a_base_url_needs_a_scheme_and_a_host(url: str, problem: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=f"^--base-url .*{re.escape(problem)}"):
        load(flags={"base_url": url}, env={})
    with pytest.raises(ConfigError, match=r"^environment DISPATCHER_BASE_URL"):
        load(env={"DISPATCHER_BASE_URL": url})
    path = write(tmp_path, f"[gateway]\nbase_url = {orjson.dumps(url).decode()}\n")
    with pytest.raises(ConfigError, match=r"\[gateway\] base_url"):
        load(config_file=path, env={})


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8080/raven",
        "https://elastic.messangi.me/raven",
        "HTTPS://Example.COM/raven/",
        "http://[::1]:8080/raven",
        "http://localhost",
        "http://gateway.internal:65535/a/b/c",
    ],
)
def test_good_base_urls(url: str) -> None:
    assert load(flags={"base_url": url}, env={}).base_url == url


def test_a_url_with_a_password_is_refused_without_showing_it() -> None:
    with pytest.raises(ConfigError, match="user name or password") as caught:
        load(flags={"base_url": "https://user:hunter2-pass@example.com/raven"}, env={})
    assert "hunter2" not in str(caught.value)


@pytest.mark.parametrize(
    "callbacks",
    [
        "http:///dr/s3cr3t-segment",
        "s3cr3t-segment",
        "https://ok.example/dr,https://:1/s3cr3t-segment",
        "https://ok.example/s3cr3t-segment, ",
        "http://h:70000/dr/s3cr3t-segment",
    ],
)
def test_callbacks_are_urls_and_are_never_quoted(callbacks: str) -> None:
    with pytest.raises(ConfigError, match=r"^--callbacks: ") as caught:
        load(flags={"callbacks": callbacks}, env={})
    assert "(the URL is not shown)" in str(caught.value)
    assert "s3cr3t" not in str(caught.value)


def test_good_callbacks() -> None:
    urls = "https://dr.example.com/dr/s3cr3t-segment, http://127.0.0.1:8090/dr?x=1"
    assert load(flags={"callbacks": urls}, env={}).callbacks == urls


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("gateway = 5\n", r"\[gateway\] must be a section"),
        ('gateway = "x"\n', r"\[gateway\] must be a section"),
        ("timeout = 5\n", r"'timeout' must be inside its section: write it under \[gateway\]"),
        ("from = '1'\n", r"under \[message\]"),
        ("nonsense = 5\n", "unknown top-level key 'nonsense'"),
        ("[sending]\ntimeout = 5\n", r"'timeout' belongs in \[gateway\], not in \[sending\]"),
        ("[retry]\nconcurrency = 5\n", r"belongs in \[sending\], not in \[retry\]"),
        ("[sending.rates]\nA = 'fast'\n", r"\[sending\.rates\] A must be a positive rate"),
        ("[sending]\nrates = 5\n", r"\[sending\.rates\] must be a table"),
        ("[gateway]\ntimeout = 'x'\n", r"\[gateway\] timeout must be a number of seconds"),
        ("[message]\nfrom = 5\n", r"\[message\] from must be a string"),
        ("api_key_file = 5\n", "api_key_file .top level. must be a string"),
    ],
)
def test_errors_name_the_right_section(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load(config_file=write(tmp_path, text), env={})


def test_a_config_file_that_is_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_bytes(b"[gateway]\nbase_url = '\xff'\n")
    with pytest.raises(ConfigError, match=r"not valid TOML|not UTF-8"):
        load(config_file=path, env={})


def test_validate_checks_a_config_built_in_code() -> None:
    for bad in (
        {"timeout": math.inf},
        {"timeout": math.nan},
        {"concurrency": 0},
        {"base_url": "http://"},
        {"max_message_segments": 256},
        {"segment_model": "x"},
        {"rates": {"1": math.nan}},
    ):
        with pytest.raises(ConfigError):
            validate(Config(**bad))  # type: ignore[arg-type]


# --- secret files ----------------------------------------------------------------------


def test_a_secret_file_is_capped_at_64_kib(tmp_path: Path) -> None:
    path = tmp_path / "key"
    path.write_bytes(b"k" * 64 * 1024)
    assert len(read_secret_file(path, "the key file").reveal()) == 64 * 1024
    path.write_bytes(b"k" * (64 * 1024 + 1))
    with pytest.raises(ConfigError, match="larger than 64 KiB"):
        read_secret_file(path, "the key file")


def test_dev_zero_is_refused_not_read_to_the_end() -> None:
    with pytest.raises(ConfigError, match="the key file /dev/zero is larger than 64 KiB"):
        read_secret_file("/dev/zero", "the key file")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"\xff\xfesecret-key\n", "is not UTF-8 text"),
        (b"", "is empty"),
        (b" \n\t\n", "is empty"),
    ],
)
def test_a_secret_file_must_be_utf8_and_hold_a_line(
    tmp_path: Path, content: bytes, message: str
) -> None:
    path = tmp_path / "key"
    path.write_bytes(content)
    with pytest.raises(ConfigError, match=message) as caught:
        read_secret_file(path, "the key file")
    assert "secret-key" not in str(caught.value)


def test_a_secret_file_s_first_line_stripped_bom_and_crlf_too(tmp_path: Path) -> None:
    path = tmp_path / "key"
    path.write_bytes(b"\xef\xbb\xbf  sk-123-abc \r\nsecond line\r\n")
    assert read_secret_file(path, "the key file").reveal() == "sk-123-abc"


def test_a_directory_or_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"cannot read the key file .*: Is a directory"):
        read_secret_file(tmp_path, "the key file")
    with pytest.raises(ConfigError, match="the key file does not exist") as caught:
        read_secret_file(tmp_path / "sk-typed-instead-of-a-path", "the key file")
    assert "sk-typed" not in str(caught.value)


def test_a_fifo_without_a_writer_does_not_hang(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(ConfigError, match="is empty"):
        read_secret_file(fifo, "the key file")


@pytest.mark.parametrize("key", ["caf\u00e9-key", "tab\tkey", "bell\x07key", "del\x7fkey"])
def test_an_api_key_an_http_header_cannot_carry(tmp_path: Path, key: str) -> None:
    path = tmp_path / "key"
    path.write_text(key + "\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="printable ASCII") as caught:
        find_api_key(path, {})
    assert key not in str(caught.value)
    with pytest.raises(ConfigError, match=r"DISPATCHER_API_KEY .*printable ASCII"):
        find_api_key(None, {"DISPATCHER_API_KEY": key})


@pytest.mark.parametrize("name", ["bad header", "Key:", "a\nb", "é"])
def test_the_idempotency_header_is_a_header_name(name: str, tmp_path: Path) -> None:
    path = write(tmp_path, f"[gateway]\nidempotency_header = {orjson.dumps(name).decode()}\n")
    with pytest.raises(ConfigError, match=r"\[gateway\] idempotency_header must be an HTTP"):
        load(config_file=path, env={})
    assert load(env={"DISPATCHER_IDEMPOTENCY_HEADER": ""}).idempotency_header == ""


# --- the shared quota ([quota]) ---------------------------------------------------------


def test_quota_keys_from_the_file_the_environment_and_flags(tmp_path: Path) -> None:
    text = '[quota]\nquota_url = "redis://127.0.0.1:6379/0"\nquota_peers = 3\n'
    config = load(config_file=write(tmp_path, text), env={"DISPATCHER_ACCOUNT_RATE": "200"})
    assert config.quota_url == "redis://127.0.0.1:6379/0"
    assert config.quota_peers == 3
    assert config.account_rate == 200
    assert config.quota_fallback == "pause"
    assert config.quota_namespace is None  # derived from base_url when the quota opens
    config = load(
        flags={"quota_url": "rediss://r.example:6380/2", "quota_fallback": "local"}, env={}
    )
    assert config.quota_url == "rediss://r.example:6380/2"
    assert config.quota_fallback == "local"


@pytest.mark.parametrize(
    ("flags", "error"),
    [
        ({"quota_url": "redis://:pw-Zq81@h:6379/0"}, "--quota-url: .*must not carry a password"),
        ({"quota_url": "redis://u:pw-Zq81@h/0"}, "DISPATCHER_REDIS_PASSWORD"),
        ({"quota_url": "http://h:6379/0"}, "must start with redis://"),
        ({"quota_url": "redis://h/0", "quota_peers": "0"}, "--quota-peers must be"),
        ({"quota_url": "redis://h/0", "quota_fallback": "fast"}, "--quota-fallback must be"),
        ({"quota_url": "redis://h/0", "account_rate": "0"}, "--account-rate must be"),
        ({"quota_url": "redis://h/0", "quota_namespace": "a b"}, "--quota-namespace must be"),
        ({"account_rate": "100"}, "account_rate is kept by the shared quota"),
    ],
)
def test_bad_quota_settings_are_refused(flags: dict[str, str], error: str) -> None:
    with pytest.raises(ConfigError, match=error) as caught:
        load(flags=flags, env={})
    assert "pw-Zq81" not in str(caught.value)


def test_the_redis_password_comes_from_a_file_or_the_environment(tmp_path: Path) -> None:
    assert load(env={}).redis_password is None
    config = load(env={"DISPATCHER_REDIS_PASSWORD": " env-pw \n"})
    assert config.redis_password is not None
    assert config.redis_password.reveal() == "env-pw"
    assert "env-pw" not in repr(config)
    key_file = tmp_path / "redis.password"
    key_file.write_text("file-pw\n")
    config = load(
        flags={"redis_password_file": str(key_file)},
        env={"DISPATCHER_REDIS_PASSWORD": "env-pw"},
    )
    assert config.redis_password is not None
    assert config.redis_password.reveal() == "file-pw"  # the file wins
    with pytest.raises(ConfigError, match=r"Redis password file .*does not exist"):
        load(flags={"redis_password_file": str(tmp_path / "missing")}, env={})
    with pytest.raises(ConfigError, match="unknown key 'redis_password'"):
        load(config_file=write(tmp_path, "[quota]\nredis_password = 'x'\n"), env={})
