"""GatewayClient: the only module that does HTTP I/O to the Messangi API.

One call is one attempt: retries belong to `dispatcher.retry`. What the bodies hold and
what the answers mean is `dispatcher.api` (pure); here live the connections (a
`dispatcher.http1.Pool`: keep-alive, pre-built request heads) and the requests. Every
transport failure arrives as one of our errors, mapped in one place (`dispatcher.http1`),
which tells a request that never left (*safe*: `ConnectError`) from one the gateway may
have acted on (*ambiguous*: `RequestTimeout`, `ConnectionLost`).
"""

from __future__ import annotations

from types import TracebackType
from typing import Any, Self
from urllib.parse import quote

import yarl

from dispatcher import api
from dispatcher._version import __version__
from dispatcher.config import Secret
from dispatcher.http1 import Pool, Reply
from dispatcher.logs import register_secret, scrub_answer
from dispatcher.models import Entry

JSON = "application/json"


class GatewayClient:
    """Sends batches and single messages; answers with `api.Answer` or raises our errors.

    ``timeout`` bounds a whole request — connecting, sending, and a gateway that accepts
    the connection and then never answers, or answers a byte at a time — and
    ``connect_timeout`` the connection (name resolution and TLS included) within it. It
    opens a connection per request in flight and keeps them alive: the caller bounds
    the requests in flight (the sender's slots), hence the connections. Close it (or use
    it as an ``async with``) to close them.

    The key it is given is registered with `dispatcher.logs`, and every answer is
    scrubbed of it (`logs.scrub_answer`) before anything reads it: a gateway that
    echoes the ``Authorization`` header puts no part of the key in results or errors.
    """

    def __init__(
        self,
        base_url: str,
        api_key: Secret | None,
        *,
        timeout: float,
        connect_timeout: float,
        idempotency_header: str | None = "Idempotency-Key",
    ) -> None:
        base = base_url.rstrip("/")
        self._base = base
        self._pool = Pool(base, headers(api_key), timeout=timeout, connect_timeout=connect_timeout)
        self._batch = self._pool.head("POST", _path(f"{base}/v3/messages/batch"))
        self._single = self._pool.head("POST", _path(f"{base}/v2/messages"))
        self._status_path = _path(f"{base}/v2/messages/")
        self._key_header = idempotency_header or None

    def __repr__(self) -> str:  # never the headers (they hold the key), nor a userinfo
        return f"<GatewayClient {yarl.URL(self._base).with_user(None)}>"

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Close every connection (a request still on one ends `ConnectionLost`)."""
        await self._pool.aclose()

    @property
    def connections(self) -> int:
        """Connections open now."""
        return self._pool.connections

    async def send_batch(
        self, body: bytes, *, key: str | None = None, sent: list[Entry] | bytes | None = None
    ) -> api.Answer:
        """POST v3/messages/batch once; ``sent``, the batch's entries or a packed
        batch's numbers (`Batch.sent`), lets the answer's mobiles be checked against
        their numbers as it is read (`api.batch_answer`)."""
        status, headers, payload = await self._post(self._batch, body, key)
        return api.batch_answer(status, headers, scrub_answer(payload), sent)

    async def send_single(self, body: bytes, *, key: str | None = None) -> api.Answer:
        """POST v2/messages once; the answer holds one id."""
        status, headers, payload = await self._post(self._single, body, key)
        return api.parse_single(api.check_answer(status, headers, scrub_answer(payload)))

    async def status(self, message_id: str) -> dict[str, Any]:
        """GET v2/messages/{id}: the message as the gateway knows it now. The id is one
        path segment whatever it holds (``../x``, ``a/b?c#d``), so it cannot point the
        authenticated request at another path."""
        pool = self._pool
        head = pool.head("GET", self._status_path + path_segment(message_id))
        status, headers, payload = await pool.fetch(pool.request(None, head=head))
        document = api.check_answer(status, headers, scrub_answer(payload))
        return api.parse_status(document, message_id, status=status)

    async def _post(self, head: bytes, body: bytes, key: str | None) -> Reply:
        pool = self._pool
        if key is not None and self._key_header is not None:
            return await pool.fetch(pool.request(body, head=head, headers={self._key_header: key}))
        return await pool.fetch(pool.request(body, head=head))


def headers(api_key: Secret | None) -> dict[str, str]:
    """The headers of every request to the gateway (the load tester's too): JSON both
    ways, who we are, and the key, registered with `dispatcher.logs` so that no output
    shows it."""
    fixed = {"Content-Type": JSON, "Accept": JSON, "User-Agent": f"sms-dispatcher/{__version__}"}
    if api_key is not None:
        register_secret(api_key.reveal())
        fixed["Authorization"] = f"Bearer {api_key.reveal()}"
    return fixed


def path_segment(value: str) -> str:
    """``value`` percent-encoded as one URL path segment: ``/``, ``?``, ``#`` and ``%``
    encoded, and a segment of ``.`` or ``..`` too (a client or a server would read it as
    "this directory" or "the parent")."""
    segment = quote(value, safe="")
    if segment in (".", ".."):
        segment = segment.replace(".", "%2E")
    return segment


def _path(url: str) -> str:
    """The %-encoded path of ``url``, as it goes in the request line."""
    return yarl.URL(url).raw_path or "/"
