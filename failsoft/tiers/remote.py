"""What the remote tiers share: one pooled keep-alive HTTP session, and turning failures into TierErrors."""

from __future__ import annotations

from typing import Any

import aiohttp
import msgspec

from failsoft.errors import InvalidOutput, TierRejected, TierUnavailable
from failsoft.tiers.base import Backend

# 4xx answers that say "not now" rather than "never": request timeout, conflict, too many requests
TRANSIENT = {408, 409, 425, 429}
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
        connector = aiohttp.TCPConnector(limit=self._pool_size, keepalive_timeout=30, ttl_dns_cache=300)
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
        assert self._session is not None, "backend not started"
        try:
            async with self._session.post(url, data=_encode(body)) as resp:
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
