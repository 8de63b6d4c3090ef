"""A minimal HTTP sink answering in the gateway's shape, for when the emulator is the
bottleneck (the single endpoint: one request per message).

No checks, no ledger, no faults: it parses the JSON body (to echo each number back as
``mobile``, which the dispatcher checks), answers the documented envelope, and counts.
HTTP/1.1 keep-alive with Content-Length bodies only, which is all aiohttp's client sends.
``GET /_emulator/stats`` gives ``{"accepted", "requests"}``; ``POST /_emulator/reset``.

    python bench/_sink.py [--port 0]     # first stdout line: listening on http://HOST:PORT
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import itertools
import time
from typing import Any

import orjson

_ids = itertools.count()
_stats = {"accepted": 0, "requests": 0}


def _meta() -> dict[str, Any]:
    return {"timestamp": int(time.time() * 1000), "transactionId": f"sink-{next(_ids)}"}


def answer(method: bytes, path: bytes, body: bytes) -> bytes:
    if path.endswith(b"/v3/messages/batch"):
        request = orjson.loads(body)
        prefix = f"{next(_ids):012x}"
        ids = [{"id": f"{prefix}{i:04x}", "mobile": r["to"]} for i, r in enumerate(request["to"])]
        _stats["accepted"] += len(ids)
        _stats["requests"] += 1
        data: dict[str, Any] = {
            "ids": ids,
            "invalidNumber": [],
            "from": request["from"],
            "text": request["text"],
            "type": "MT",
            "owner": "sink",
            "operator": "sink",
            "status": "QUEUE",
            "date": "2024-01-01T00:00:00.000000Z",
        }
        return orjson.dumps({"meta": _meta(), "data": data})
    if path.endswith(b"/v2/messages"):
        request = orjson.loads(body)
        _stats["accepted"] += 1
        _stats["requests"] += 1
        data = {
            "id": f"{next(_ids):016x}",
            "from": request["from"],
            "text": request["text"],
            "to": request["to"],
            "requestDR": False,
            "type": "MT",
            "owner": "sink",
            "operator": "sink",
            "status": "QUEUE",
            "date": "2024-01-01T00:00:00.000000Z",
        }
        return orjson.dumps({"meta": _meta(), "data": data})
    if path == b"/_emulator/stats":
        return orjson.dumps(_stats)
    if path == b"/_emulator/reset":
        _stats.update(accepted=0, requests=0)
        return b"{}"
    return b'{"error":"unknown path"}'


class Http(asyncio.Protocol):
    def __init__(self) -> None:
        self.buffer = b""
        self.transport: Any = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # uvloop's transports are not asyncio.Transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buffer[:end].split(b"\r\n")
            length = 0
            for line in head[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            if len(self.buffer) < end + 4 + length:
                return
            body = self.buffer[end + 4 : end + 4 + length]
            self.buffer = self.buffer[end + 4 + length :]
            method, path, _ = head[0].split(b" ", 2)
            reply = answer(method, path, body)
            assert self.transport is not None
            self.transport.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                b"Content-Length: %d\r\n\r\n%s" % (len(reply), reply)
            )


async def main(port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Http, "127.0.0.1", port, backlog=1024)
    bound = server.sockets[0].getsockname()[1]
    gc.collect()
    gc.freeze()
    print(f"listening on http://127.0.0.1:{bound}", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=0)
    port = parser.parse_args().port
    try:
        import uvloop

        uvloop.run(main(port))
    except ImportError:
        asyncio.run(main(port))
    except KeyboardInterrupt:
        pass
