"""Configuration: precedence flags > env > file > defaults, and clear errors (exit 2)."""

from dataclasses import fields
from pathlib import Path

import pytest

from dispatcher.config import (
    DEFAULT_BASE_URL,
    KEYS,
    Config,
    Secret,
    find_api_key,
    load,
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
        ("[sending]\nconcurrency = 0\n", "concurrency must be at least 1"),
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
    "sending": "batch_size linger_ms max_buffered concurrency rates kind_rates rate_unit",
    "retry": "max_attempts retry_max_wait retry_deadline retry_ambiguous",
    "output": "results invalid rejects summary fsync progress strict price_per_segment prices",
    "run": "grace_period log_level log_format",
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
        "resume",
        "force",
        "dry_run",
        "explain",
    }
    assert [k.name for k in KEYS.values() if k.secret] == ["api_key"]
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
