"""A load test as a job: what must be checked outside its settings before it runs
(the API key, the input file, matplotlib), and its outputs once it has run.

``dispatcher loadtest`` is a thin skin over `prepare`, `run_loadtest` and
`write_outputs`.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from dispatcher.config import find_api_key, find_redis_password
from dispatcher.errors import ConfigError
from dispatcher.loadtest.settings import QUOTA_KEYS, LoadTest
from dispatcher.paths import Place, check_distinct, check_writable
from dispatcher.writers import write_json

if TYPE_CHECKING:
    from dispatcher.emulator.settings import FaultSettings


def prepare(
    *,
    base_url: str | None = None,
    api_key_file: str | None = None,
    input: str | None = None,
    synthetic: bool = False,
    faults: FaultSettings | None = None,
    plot: str | None = None,
    report: str | None = None,
    redis_password_file: str | None = None,
    environ: Mapping[str, str] = os.environ,
    **settings: Any,
) -> LoadTest:
    """The test to run, every rule checked; `ConfigError` names what to fix.

    The outputs (``report``, ``plot``) are checked before the test runs: one that
    would overwrite an input or the other output is a `ConfigError`, one that cannot
    be written an `OutputError` (`dispatcher.paths`).

    Against ``base_url`` the key comes from ``api_key_file``, else
    ``DISPATCHER_API_KEY``, and the recipients from ``input`` unless ``synthetic``
    (a live gateway would text generated numbers). ``faults`` at their defaults mean
    a healthy embedded emulator. With ``quota_url`` the Redis password comes from
    ``redis_password_file``, else ``DISPATCHER_REDIS_PASSWORD`` (as `send` has it).
    ``settings`` are the rest of `LoadTest`'s fields.
    """
    api_key = None
    if base_url is None:
        if api_key_file is not None:
            raise ConfigError("--api-key-file only goes with --base-url")
    else:
        api_key = find_api_key(api_key_file)
        if input is None and not synthetic:
            raise ConfigError(
                "against a real gateway, give --input FILE with your test numbers, or "
                "--synthetic to send to generated numbers (a live gateway would text them)"
            )
    _parse_quota_settings(settings)
    if faults is not None and faults == type(faults)():
        faults = None
    if input is not None and input != "-" and not os.path.exists(input):
        raise ConfigError(f"--input {input} does not exist")
    redis_password = None
    if settings.get("quota_url") is not None:
        redis_password = find_redis_password(redis_password_file, environ)
    elif redis_password_file is not None:
        raise ConfigError("--redis-password-file only goes with --quota-url")
    read = [
        Place(option, path)
        for option, path in (
            ("--input", input),
            ("--api-key-file", api_key_file),
            ("--redis-password-file", redis_password_file),
        )
        if path
    ]
    written = [
        Place(option, path) for option, path in (("--report", report), ("--plot", plot)) if path
    ]
    check_distinct(read, written)
    check_writable(written)
    if plot is not None:
        from dispatcher.loadtest.plot import check_available

        check_available(plot)
    return LoadTest(
        base_url=base_url,
        api_key=api_key,
        input=input,
        faults=faults,
        redis_password=redis_password,
        **settings,
    )


def _parse_quota_settings(settings: dict[str, Any]) -> None:
    """send's quota settings as the command line gave them (text, or None: not given),
    read by send's own configuration keys (`QUOTA_KEYS`), so that they take the same
    values and refuse the same ones with the same words."""
    from dispatcher.config import KEYS

    for name, key_name in QUOTA_KEYS.items():
        if name not in settings:
            continue
        value = settings.pop(name)
        if value is None:
            continue
        value = KEYS[key_name].read("--" + name.replace("_", "-"), value)
        if name == "account_rate" and value == math.inf:
            continue  # no account limit: the default
        settings[name] = value


def write_outputs(
    report: dict[str, Any], *, json_path: str | None, plot_path: str | None
) -> list[str]:
    """Write the JSON report and the plot where asked; what could not be written."""
    problems = []
    if json_path and (problem := write_json(json_path, report)):
        problems.append(problem)
    if plot_path:
        from dispatcher.loadtest.plot import plot

        try:
            plot(report, plot_path)
        except OSError as exc:
            problems.append(f"cannot write {plot_path}: {exc.strerror}")
    return problems
