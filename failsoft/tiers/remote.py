"""What the remote tiers share: one pooled keep-alive HTTP session, and turning failures into TierErrors."""

from __future__ import annotations

from typing import Any

import aiohttp
import msgspec

from failsoft import tracing
from failsoft.errors import InvalidOutput, TierRejected, TierUnavailable
from failsoft.tiers.base import Backend

# 4xx answers that say "not now" rather than "never": request timeout, conflict, too many requests
TRANSIENT = {408, 409, 425, 429}
# Idle connections are closed before the servers behind most engines close theirs (uvicorn: 5 s), so a
# request rarely meets a connection the server has just closed.
KEEP_ALIVE_S = 4.0
# What a request on such a stale connection fails with.
STALE = (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError)
_decode = msgspec.json.Decoder().decode
_encode = msgspec.json.Encoder().encode


def gist(body: bytes, limit: int = 300) -> str:
    """What an error answer says, on one line: a Python traceback's last line (the exception), else the
    text with its whitespace collapsed, at most ``limit`` characters."""
    text = (
        body[-4000:].decode("utf-8", "replace")
        if b"Traceback (most recent" in body
        else body[:4000].decode("utf-8", "replace")
    )
    if "Traceback (most recent" in text:
        lines = [line for line in text.splitlines() if line.strip()]
        text = lines[-1] if lines else text
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


class RemoteBackend(Backend):
    """A backend reached over HTTP. Timeouts are the chain's: the session itself sets none."""

    def __init__(self, name: str, pool_size: int, headers: dict[str, str] | None = None) -> None:
        self.name = name
        self._pool_size = pool_size
        self._headers = {"Content-Type": "application/json", **(headers or {})}
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        connector = aiohttp.TCPConnector(
            limit=self._pool_size, keepalive_timeout=KEEP_ALIVE_S, ttl_dns_cache=300
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(total=None),
            headers=self._headers,
            skip_auto_headers=("User-Agent",),
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def post_json(self, url: str, body: Any) -> Any:
        data = _encode(body)
        try:
            return await self._post(url, data)
        except TierUnavailable as err:
            cause = err.__cause__
            if not isinstance(cause, STALE) or isinstance(cause, aiohttp.ClientConnectorError):
                raise  # a connection that could not be made is not a stale one
        # A kept-alive connection the server had just closed (an idle timeout, or its own choice after an
        # error): the request usually never reached the model. Once more, on a fresh connection; the tier's
        # timeout still bounds both.
        return await self._post(url, data)

    async def _post(self, url: str, data: bytes) -> Any:
        assert self._session is not None, "backend not started"
        try:
            # while traces are on, the tier attempt's traceparent (failsoft/tracing.py); else None
            async with self._session.post(url, data=data, headers=tracing.outgoing()) as resp:
                raw = await resp.read()
                if resp.status >= 300:
                    said = gist(raw)
                    if 400 <= resp.status < 500 and resp.status not in TRANSIENT:
                        raise TierRejected(
                            f"HTTP {resp.status} from {url} (the request is wrong for it): {said}"
                        )
                    raise TierUnavailable(f"HTTP {resp.status} from {url}: {said}", resp.status)
        except aiohttp.ClientError as err:
            raise TierUnavailable(f"{type(err).__name__} calling {url}: {err}") from err
        try:
            return _decode(raw)
        except msgspec.DecodeError as err:
            raise InvalidOutput(f"response from {url} is not JSON: {raw[:80]!r}") from err
