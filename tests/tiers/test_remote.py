"""The remote tiers' connection pool against a server that closes a kept-alive connection when the next
request arrives on it (as servers do after their idle timeout, or after an error): the request is sent
once more on a fresh connection instead of failing."""

from __future__ import annotations

import asyncio
import json

from failsoft.config import FeatureSpec, OipTierSpec
from failsoft.tiers import OipBackend
from failsoft.validation import InputSchema


async def one_request_per_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    served = 0
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = next(
                int(line.split(b":")[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length")
            )
            await reader.readexactly(length)
            if served:  # the second request on this connection: hang up without a word
                break
            body = json.dumps(
                {"outputs": [{"name": "output", "shape": [1], "datatype": "FP64", "data": [0.7]}]}
            )
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
                + str(len(body)).encode() + b"\r\n\r\n" + body.encode()
            )  # fmt: skip
            await writer.drain()
            served += 1
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    writer.close()


async def test_a_connection_the_server_closed_is_retried_once_on_a_fresh_one() -> None:
    server = await asyncio.start_server(one_request_per_connection, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    spec = OipTierSpec(name="engine", url=f"http://127.0.0.1:{port}", model_name="m")
    backend = OipBackend(spec, {"x": "float"})
    await backend.start()
    try:
        batch = InputSchema([FeatureSpec(name="x")]).validate([{"x": 1.0}])
        for _ in range(5):
            assert await backend.call(batch, "r") == [0.7]
    finally:
        await backend.close()
        server.close()
        await server.wait_closed()
