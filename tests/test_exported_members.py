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
