"""The public surface is exactly ``__all__``, sorted, and every name resolves."""

import dispatcher


def test_all_is_sorted_and_unique() -> None:
    assert list(dispatcher.__all__) == sorted(set(dispatcher.__all__))


def test_every_exported_name_resolves() -> None:
    for name in dispatcher.__all__:
        assert getattr(dispatcher, name) is not None, name


def test_public_names_match_all() -> None:
    public = {name for name in dir(dispatcher) if not name.startswith("_")}
    assert public == {n for n in dispatcher.__all__ if not n.startswith("_")}


async def test_library_use_through_public_names(emulator, tmp_path) -> None:  # type: ignore[no-untyped-def]
    source = tmp_path / "in.ndjson"
    source.write_text('{"to": "+525500000001", "params": ["Ana"]}\n{"to": "12ab"}\n')
    config = dispatcher.load_config(
        flags={
            "base_url": emulator.base_url,
            "sender": "12345",
            "text": "Hi {0}",
            "results": str(tmp_path / "results.ndjson"),
            "rates": {"12345": float("inf")},
            "progress": False,
        },
        env={"DISPATCHER_API_KEY": "test-key"},
    )
    summary = await dispatcher.run(str(source), config)
    assert isinstance(summary, dispatcher.Summary)
    assert dict(summary.statuses) == {
        dispatcher.Status.QUEUE: 1,
        dispatcher.Status.INVALID_NUMBER: 1,
    }
    assert summary.exit_code() == 0
