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

import aiohttp

from dispatcher import api
from dispatcher._version import __version__
from dispatcher.config import Secret
from dispatcher.errors import ConnectError, ConnectionLost, RequestTimeout

JSON = "application/json"


def open_session(
    *, concurrency: int, timeout: float, connect_timeout: float
) -> aiohttp.ClientSession:
    """The one shared session: keep-alive, a connector sized to the concurrency."""
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
    """Sends batches and single messages; answers with `api.Answer` or raises our errors."""

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
        self._status_url = f"{base}/v2/messages/"
        self._key_header = idempotency_header or None
        self._headers = {
            "Content-Type": JSON,
            "Accept": JSON,
            "User-Agent": f"sms-dispatcher/{__version__}",
        }
        if api_key is not None:
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
        """GET v2/messages/{id}: the message as the gateway knows it now."""
        url = self._status_url + message_id
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
        self, method: str, url: str, body: bytes | None, headers: Mapping[str, str]
    ) -> tuple[int, Mapping[str, str], bytes]:
        try:
            async with self._session.request(
                method, url, data=body, headers=headers, allow_redirects=False
            ) as response:
                payload = await response.read()
                return response.status, response.headers, payload
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


def _where(url: str) -> str:
    # host and path only: a URL could carry credentials in its userinfo part
    parts = url.split("://", 1)[-1]
    return parts.rsplit("@", 1)[-1]
