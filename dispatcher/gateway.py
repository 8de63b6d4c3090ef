"""GatewayClient: the only module that does HTTP I/O to the Messangi API.

One call is one attempt: retries belong to `dispatcher.retry`. What the bodies hold and
what the answers mean is `dispatcher.api` (pure); here live the session, the requests,
and the mapping of every aiohttp exception onto the error tree — the one place that
tells a request that never left (*safe*: connect errors) from one the gateway may have
acted on (*ambiguous*: a timeout or a dropped connection after sending).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

import aiohttp
import yarl

from dispatcher import api
from dispatcher._version import __version__
from dispatcher.config import Secret
from dispatcher.errors import ConnectError, ConnectionLost, RequestTimeout
from dispatcher.logs import register_secret, scrub_answer

JSON = "application/json"


def open_session(
    *, concurrency: int, timeout: float, connect_timeout: float
) -> aiohttp.ClientSession:
    """The one shared session: keep-alive, a connector sized to the concurrency.

    ``timeout`` bounds a whole request — connecting, sending, and a gateway that accepts
    the connection and then never answers, or answers a byte at a time — and
    ``connect_timeout`` the connection (name resolution included) within it.
    """
    connector = aiohttp.TCPConnector(
        limit=concurrency, limit_per_host=concurrency, ttl_dns_cache=300
    )
    return aiohttp.ClientSession(
        connector=connector,
        timeout=aiohttp.ClientTimeout(total=timeout, connect=connect_timeout),
        raise_for_status=False,
        auto_decompress=True,
    )


class GatewayClient:
    """Sends batches and single messages; answers with `api.Answer` or raises our errors.

    The key it is given is registered with `dispatcher.logs`, and every answer is
    scrubbed of it (`logs.scrub_answer`) before anything reads it: a gateway that
    echoes the ``Authorization`` header puts no part of the key in results or errors.
    """

    def __init__(
        self,
        session: aiohttp.ClientSession,
        base_url: str,
        api_key: Secret | None,
        *,
        idempotency_header: str | None = "Idempotency-Key",
    ) -> None:
        base = base_url.rstrip("/")
        self._session = session
        self._batch_url = f"{base}/v3/messages/batch"
        self._single_url = f"{base}/v2/messages"
        self._status_url = str(yarl.URL(f"{base}/v2/messages/"))
        self._key_header = idempotency_header or None
        self._headers = {
            "Content-Type": JSON,
            "Accept": JSON,
            "User-Agent": f"sms-dispatcher/{__version__}",
        }
        if api_key is not None:
            register_secret(api_key.reveal())
            self._headers["Authorization"] = f"Bearer {api_key.reveal()}"

    def __repr__(self) -> str:  # never show headers: they hold the key
        return f"<GatewayClient {self._batch_url.removesuffix('/v3/messages/batch')}>"

    async def send_batch(self, body: bytes, *, key: str | None = None) -> api.Answer:
        """POST v3/messages/batch once."""
        status, headers, payload = await self._post(self._batch_url, body, key)
        return api.parse_batch(api.check_answer(status, headers, payload))

    async def send_single(self, body: bytes, *, key: str | None = None) -> api.Answer:
        """POST v2/messages once; the answer holds one id."""
        status, headers, payload = await self._post(self._single_url, body, key)
        return api.parse_single(api.check_answer(status, headers, payload))

    async def status(self, message_id: str) -> dict[str, Any]:
        """GET v2/messages/{id}: the message as the gateway knows it now. The id is one
        path segment whatever it holds (``../x``, ``a/b?c#d``), so it cannot point the
        authenticated request at another path."""
        url = yarl.URL(self._status_url + path_segment(message_id), encoded=True)
        status, headers, payload = await self._request("GET", url, None, self._headers)
        document = api.check_answer(status, headers, payload)
        return api.parse_status(document, message_id, status=status)

    async def _post(
        self, url: str, body: bytes, key: str | None
    ) -> tuple[int, Mapping[str, str], bytes]:
        headers = self._headers
        if key is not None and self._key_header is not None:
            headers = {**headers, self._key_header: key}
        return await self._request("POST", url, body, headers)

    async def _request(
        self, method: str, url: str | yarl.URL, body: bytes | None, headers: Mapping[str, str]
    ) -> tuple[int, Mapping[str, str], bytes]:
        try:
            async with self._session.request(
                method, url, data=body, headers=headers, allow_redirects=False
            ) as response:
                payload = await response.read()
                return response.status, response.headers, scrub_answer(payload)
        except aiohttp.ConnectionTimeoutError as exc:
            raise ConnectError(f"timed out connecting to {_where(url)}") from exc
        except aiohttp.ClientConnectorError as exc:
            raise ConnectError(f"cannot connect to {_where(url)}: {exc.os_error}") from exc
        except (TimeoutError, aiohttp.ServerTimeoutError) as exc:
            raise RequestTimeout(f"no answer from {_where(url)} in time after sending") from exc
        except aiohttp.ServerDisconnectedError as exc:
            raise ConnectionLost(f"{_where(url)} closed the connection without answering") from exc
        except aiohttp.ClientPayloadError as exc:
            raise ConnectionLost(f"the answer from {_where(url)} was cut off: {exc}") from exc
        except aiohttp.ClientError as exc:
            raise ConnectionLost(f"connection to {_where(url)} failed: {exc}") from exc


def path_segment(value: str) -> str:
    """``value`` percent-encoded as one URL path segment: ``/``, ``?``, ``#`` and ``%``
    encoded, and a segment of ``.`` or ``..`` too (a client or a server would read it as
    "this directory" or "the parent")."""
    segment = quote(value, safe="")
    if segment in (".", ".."):
        segment = segment.replace(".", "%2E")
    return segment


def _where(url: str | yarl.URL) -> str:
    # host and path only: a URL could carry credentials in its userinfo part
    parts = str(url).split("://", 1)[-1]
    return parts.rsplit("@", 1)[-1]
