"""The journal and what --resume reads back from it."""

from pathlib import Path

import orjson
import pytest

from dispatcher.config import Config
from dispatcher.errors import ConfigError
from dispatcher.journal import Journal, LineSet, batch_key, fingerprint, journal_path, read_state


def config(tmp_path: Path, **kw: object) -> Config:
    values: dict[str, object] = {
        "results": str(tmp_path / "results.ndjson"),
        "sender": "1",
        "text": "t",
    }
    values.update(kw)
    return Config(**values)  # type: ignore[arg-type]


def result(line: int, **kw: object) -> bytes:
    return (
        orjson.dumps(
            {
                "line": line,
                "status": "QUEUE",
                "id": f"m{line}",
                "segments": 1,
                "encoding": "GSM7",
                **kw,
            }
        )
        + b"\n"
    )


def test_lineset_is_a_set_of_ints() -> None:
    lines = LineSet()
    for n in (1, 8, 9, 1_000_003, 8):
        lines.add(n)
    assert len(lines) == 4
    assert 8 in lines
    assert 1_000_003 in lines
    assert 2 not in lines
    assert 5_000_000 not in lines
    assert "8" not in lines


def test_keys_depend_on_job_and_lines_only() -> None:
    assert batch_key("job", [1, 2, 3]) == batch_key("job", [1, 2, 3])
    assert batch_key("job", [1, 2, 3]) != batch_key("job", [1, 2, 4])
    assert batch_key("job", [1, 2]) != batch_key("job", [1, 2, 3])  # a 413 half differs
    assert batch_key("job", [1]) != batch_key("other", [1])


def test_new_run_refuses_an_existing_journal(tmp_path: Path) -> None:
    journal, state = Journal.start(config(tmp_path), "in.ndjson")
    journal.close()
    assert state is None
    with pytest.raises(ConfigError, match=r"--resume.*--force"):
        Journal.start(config(tmp_path), "in.ndjson")
    journal, state = Journal.start(config(tmp_path, force=True), "in.ndjson")
    journal.close()
    assert state is None


def test_resume_without_journal_or_on_stdout(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no journal"):
        Journal.start(config(tmp_path, resume=True), "in")
    with pytest.raises(ConfigError, match="--results PATH"):
        Journal.start(config(tmp_path, resume=True, results="-"), "in")


def test_resume_finds_in_flight_batches_and_done_lines(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    journal, _ = Journal.start(cfg, "in")
    done_key, flight_key, unsent_key = journal.key([1, 2]), journal.key([3, 4]), journal.key([5])
    journal.sent(done_key, [1, 2])
    journal.done(done_key)
    journal.commit()
    journal.sent(flight_key, [3, 4])
    journal.sent(unsent_key, [5])
    journal.unsent(unsent_key)
    journal.close()
    results = Path(cfg.results)
    # lines 1, 2 done; 3 written before the crash (the batch's other line was not);
    # then a last line cut in half by the crash
    results.write_bytes(result(1) + result(2) + result(3) + b'{"line": 4, "sta')
    state = read_state(journal_path(cfg.results), cfg.results, fingerprint(cfg))
    assert state.job == journal.job
    assert state.in_flight == {flight_key: [3, 4]}
    assert sorted(n for n in range(10) if n in state.done) == [1, 2, 3]
    assert state.statuses == {"QUEUE": 3}
    assert state.segments == {"GSM7": 3}
    assert results.read_bytes().endswith(result(3))  # the torn line is gone


def test_resume_refuses_changed_options(tmp_path: Path) -> None:
    journal, _ = Journal.start(config(tmp_path), "in")
    journal.close()
    with pytest.raises(ConfigError, match="differ"):
        Journal.start(config(tmp_path, resume=True, text="other"), "in")


def test_a_torn_journal_record_is_ignored(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    journal, _ = Journal.start(cfg, "in")
    journal.sent(journal.key([1]), [1])
    journal.close()
    with open(journal_path(cfg.results), "ab") as f:
        f.write(b'{"sent": "x", "li')
    state = read_state(journal_path(cfg.results), cfg.results, fingerprint(cfg))
    assert list(state.in_flight.values()) == [[1]]


def test_complete_marker(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    journal, _ = Journal.start(cfg, "in")
    journal.complete()
    journal.close()
    assert read_state(journal_path(cfg.results), cfg.results, fingerprint(cfg)).complete


def test_resume_refuses_a_changed_input(tmp_path: Path) -> None:
    source = tmp_path / "in.ndjson"
    source.write_text('{"to": "+525500000001"}\n')
    journal, _ = Journal.start(config(tmp_path), str(source))
    journal.close()
    Journal.start(config(tmp_path, resume=True), str(source))[0].close()  # same input: fine
    source.write_text('{"to": "+525500000001"}\n{"to": "+525500000002"}\n')
    with pytest.raises(ConfigError, match="the input has changed"):
        Journal.start(config(tmp_path, resume=True), str(source))
    Journal.start(config(tmp_path, resume=True), "-")[0].close()  # a pipe cannot be checked
