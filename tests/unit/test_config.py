"""Configuration: precedence flags > env > file > defaults, and clear errors (exit 2)."""

from pathlib import Path

import pytest

from dispatcher.config import DEFAULT_BASE_URL, Config, Secret, load, validate
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
    assert config.max_segments == 10
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
