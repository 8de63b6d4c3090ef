# The C part's signatures (csrc/native.c); see dispatcher/native.py.
from collections.abc import Callable, Sequence
from typing import Any

from _typeshed import ReadableBuffer, WriteableBuffer

VERSION: int

def text_hashes(texts: Sequence[str], out: WriteableBuffer, /) -> None: ...
def column_ints(
    rows: Sequence[tuple[object, ...]], column: int, out: WriteableBuffer, /
) -> bool: ...
def column_keys(
    rows: Sequence[tuple[object, ...]], column: int, out: WriteableBuffer, /
) -> bool: ...
def number_keys(numbers: Sequence[str | None], out: WriteableBuffer, /) -> bool: ...
def merge_keys(
    runs: list[ReadableBuffer], out: WriteableBuffer, source: WriteableBuffer, /
) -> None: ...
def plain_keys(
    text: str,
    separators: bytes,
    table: ReadableBuffer,
    min_digits: int,
    max_digits: int,
    keys: WriteableBuffer,
    valid: WriteableBuffer,
    /,
) -> int | None: ...
def accepted_lines(
    entries: Sequence[tuple[object, ...]],
    ids: Sequence[str],
    middle: str,
    kinds: tuple[tuple[object, str], ...],
    dumps: Callable[[object], bytes],
    /,
) -> tuple[bytes, list[tuple[int, int]], int, int] | None: ...
def segment_counts(
    texts: Sequence[str],
    classes: bytes,
    gsm7: tuple[object, ...],
    ucs2: tuple[object, ...],
    three_gpp: bool,
    /,
) -> list[Any]: ...
def chunk_numbers(
    items: Sequence[object],
    type: type,
    descriptors: tuple[Any, ...],
    normalize: Callable[[str], str | None],
    /,
) -> list[str | None]: ...
def plain_texts(
    items: Sequence[object],
    numbers: Sequence[str | None],
    type: type,
    descriptors: tuple[Any, ...],
    literals: tuple[str, ...],
    indexes: tuple[int, ...],
    render: Callable[[Any], str],
    dumps: Callable[[object], bytes],
    /,
) -> tuple[list[int], list[str]] | None: ...
def plain_entries(
    entry_type: type,
    items: Sequence[object],
    numbers: Sequence[str | None],
    specials: Sequence[int],
    counts: Sequence[tuple[Any, ...]],
    texts: Sequence[str] | None,
    type: type,
    descriptors: tuple[Any, ...],
    /,
) -> list[Any]: ...
def batch_recipients(
    entries: Sequence[tuple[Any, ...]],
    dumps: Callable[[object], bytes],
    head: ReadableBuffer,
    tail: ReadableBuffer,
    /,
) -> bytes | None: ...
def batch_answer(
    payload: bytes, sent: list[Any] | bytes | None = None, /
) -> tuple[list[str], list[str | None] | None, str | None, str | None] | None: ...
def pack_batch(
    entries: Sequence[tuple[Any, ...]],
    kinds: tuple[tuple[object, bytes], ...],
    dumps: Callable[[object], bytes],
    head: ReadableBuffer,
    tail: ReadableBuffer,
    /,
) -> (
    tuple[bytes, bytes, bytes, bytes, bytes, bytes, bytes, list[Any] | None, list[tuple[int, int]]]
    | None
): ...
def accepted_packed(
    pieces: ReadableBuffer,
    ends: ReadableBuffer,
    ids: Sequence[str],
    middle: ReadableBuffer,
    after: ReadableBuffer,
    /,
) -> bytes | None: ...
def decode_block(
    data: bytes,
    first_line: int,
    longest: int,
    decode: Callable[[bytes], object],
    failed: tuple[type[BaseException], ...],
    careful: Callable[[bytes, int], object],
    misses: int,
    skip: int,
    type: type,
    descriptors: tuple[object, ...],
    /,
) -> tuple[list[Any] | None, int]: ...
def take_at(
    keys: ReadableBuffer, lines: ReadableBuffer, first: int, out: WriteableBuffer, /
) -> bool: ...

class Record:
    size: int
    runs: int
    nbytes: int
    def __init__(self, texts: bool, *, min_filter: int = ..., filter_words: int = ...) -> None: ...
    def check(
        self,
        keys: ReadableBuffer,
        codes: int | ReadableBuffer,
        hashes: ReadableBuffer | None,
        lines: ReadableBuffer,
        /,
    ) -> tuple[list[int], list[int]]: ...
