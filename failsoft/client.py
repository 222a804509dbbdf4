"""The application-side safety net: a small client whose own last-resort default answers when the
gateway itself cannot (unreachable, slower than the client's timeout, or a 5xx).

>>> client = Client("http://failsoft:8000", timeout_ms=80, defaults={"recs": TOP10})   # doctest: +SKIP
>>> outcome = client.predict("recs", {"segment": 3, "hour": 18})                        # doctest: +SKIP
>>> outcome.tier, outcome.degraded                                                       # doctest: +SKIP
('hourly-remote', False)

When the gateway answers, its outcome is returned as it is. When it cannot, the answer comes from the
default given in code for that model (``defaults``, else ``default``), else from the last good answer the
client saw for that model; the outcome says ``tier="client-default"`` (or ``"client-cache"``),
``degraded=True`` and why. A 4xx is the caller's mistake and raises (InvalidRequest, UnknownModel).
"""

from __future__ import annotations

import asyncio
import itertools
import os
import ssl
import threading
import time
import weakref
from typing import Any

import aiohttp
import certifi
import msgspec

from failsoft.errors import FailsoftError, InvalidRequest, UnknownModel
from failsoft.tasks import LoopThread
from failsoft.types import Outcome, Reason, Skip

__all__ = ["Client", "NoDefault"]

_MISSING: Any = object()
_decode = msgspec.json.Decoder(Outcome).decode
_encode = msgspec.json.Encoder().encode


class NoDefault(FailsoftError):
    """The gateway could not answer and the client has no default and no cached answer for the model."""


class Client:
    def __init__(
        self,
        base_url: str,
        timeout_ms: float = 100.0,
        default: Any = _MISSING,
        defaults: dict[str, Any] | None = None,
        cache: bool = True,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout_s = timeout_ms / 1000.0
        self.default = default
        self.defaults = dict(defaults or {})
        self.cache = cache
        self._last_good: dict[str, Any] = {}
        self._ids = itertools.count(1)
        self._prefix = f"c{os.urandom(3).hex()}"
        self._headers = {"content-type": "application/json", **(headers or {})}
        # One TLS context for both faces: building it costs tens of milliseconds, which must not be spent
        # inside the first call's time budget.
        self._tls = ssl.create_default_context(cafile=certifi.where())
        # a session per event loop that used the client (the caller's, and the synchronous face's own)
        self._sessions: dict[asyncio.AbstractEventLoop, aiohttp.ClientSession] = {}
        # the synchronous face runs the same calls on an event loop of its own, in a thread
        self._sync: LoopThread | None = None
        self._finalizer: weakref.finalize[Any, Any]
        self._lock = threading.Lock()

    def _client(self) -> aiohttp.ClientSession:
        loop = asyncio.get_running_loop()
        session = self._sessions.get(loop)
        if session is None:
            session = self._sessions[loop] = aiohttp.ClientSession(
                headers=self._headers, connector=aiohttp.TCPConnector(ssl=self._tls, keepalive_timeout=30)
            )
        return session

    def _sync_loop(self) -> LoopThread:
        with self._lock:
            if self._sync is None:
                self._sync = LoopThread("failsoft-client")
                # a client never closed (a script's ``client.predict``) closes its connections when it is
                # collected or the interpreter exits, rather than leaving aiohttp to warn at exit
                self._finalizer = weakref.finalize(self, _stop_sync, self._sync, self._sessions)
            return self._sync

    # ---- the two faces ----------------------------------------------------------------------------------

    def predict(self, model: str, inputs: Any, id: str | None = None) -> Outcome:
        """The gateway's outcome, or the client's own default within ``timeout_ms``."""
        return self._sync_loop().run(self.apredict(model, inputs, id))

    async def apredict(self, model: str, inputs: Any, id: str | None = None) -> Outcome:
        """``predict`` for asyncio code; the whole call is bounded by ``timeout_ms``."""
        session = self._client()
        request_id = id or self._next_id()
        started = time.perf_counter()
        body = _encode({"inputs": inputs, "id": request_id})
        try:
            async with asyncio.timeout(self.timeout_s):
                async with session.post(self._url(model), data=body) as resp:
                    status, content = resp.status, await resp.read()
        except TimeoutError:
            said = f"no answer within {self.timeout_s * 1000:g} ms"
            return self._fallback(model, request_id, Reason.TIMEOUT, said, started)
        except (aiohttp.ClientError, OSError) as err:
            said = f"unreachable: {_unreachable(err)}"
            return self._fallback(model, request_id, Reason.ERROR, said, started)
        return self._read(model, request_id, status, content, started)

    def close(self) -> None:
        """Close the synchronous face's connections and its event loop."""
        with self._lock:
            sync, self._sync = self._sync, None
        if sync is not None:
            self._finalizer.detach()
            sync.stop(self.aclose())

    async def aclose(self) -> None:
        """Close this event loop's connections."""
        session = self._sessions.pop(asyncio.get_running_loop(), None)
        if session is not None:
            await session.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self) -> Client:
        self._client()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # ---- the shared parts -------------------------------------------------------------------------------

    def _next_id(self) -> str:
        return f"{self._prefix}-{next(self._ids)}"

    def _url(self, model: str) -> str:
        return f"{self.base_url}/v1/models/{model}/predict"

    def _read(self, model: str, request_id: str, status: int, body: bytes, started: float) -> Outcome:
        if status >= 500:
            return self._fallback(model, request_id, Reason.ERROR, f"gateway answered HTTP {status}", started)
        if status == 404:
            try:
                said = str(msgspec.json.decode(body).get("error", ""))
            except (msgspec.DecodeError, AttributeError):
                said = ""
            if said.startswith("unknown model"):
                known = said.partition("serves ")[2]
                raise UnknownModel(model, [] if known == "none" else known.split(", "))
            raise InvalidRequest(
                f"{self.base_url}/v1/models/{model}/predict answered 404 ({said or body[:80]!r}): "
                "base_url must be the gateway's root, e.g. http://host:8000"
            )
        if status >= 400:
            raise InvalidRequest(f"gateway refused the request (HTTP {status}): {body[:300]!r}")
        try:
            outcome = _decode(body)
        except msgspec.DecodeError as err:
            return self._fallback(
                model, request_id, Reason.INVALID_OUTPUT, f"unreadable answer: {err}", started
            )
        if self.cache:
            self._last_good[model] = outcome.outputs
        return outcome

    def _fallback(self, model: str, request_id: str, reason: Reason, detail: str, started: float) -> Outcome:
        if model in self.defaults:
            tier, value = "client-default", self.defaults[model]
        elif self.default is not _MISSING:
            tier, value = "client-default", self.default
        elif model in self._last_good:
            tier, value = "client-cache", self._last_good[model]
        else:
            raise NoDefault(
                f"the gateway at {self.base_url} could not answer for {model!r} ({detail}) and the client "
                "has no default for it: pass default= or defaults={model: ...}"
            )
        return Outcome(
            id=request_id,
            model=model,
            version="",
            tier=tier,
            degraded=True,
            reason=reason,
            outputs=value,
            latency_ms=(time.perf_counter() - started) * 1000.0,
            skips=(Skip("gateway", reason, detail[:300]),),
        )


def _stop_sync(sync: LoopThread, sessions: dict[asyncio.AbstractEventLoop, aiohttp.ClientSession]) -> None:
    """The synchronous face's connections closed on its own loop, then the loop stopped (from
    ``weakref.finalize``: it holds these, never the client)."""
    session = sessions.pop(sync.loop, None)
    if threading.current_thread() is sync.thread:  # collected on its own loop: nothing may wait there
        sync.loop.call_soon(sync.loop.stop)
        return
    sync.stop(session.close() if session is not None else None)


def _unreachable(err: BaseException) -> str:
    """Why a connection failed, in words ("connection refused"), without aiohttp's own wording (its
    "ssl:default" shows even for a plain-HTTP URL)."""
    if isinstance(err, aiohttp.ClientConnectorError):
        cause = err.os_error
        why = os.strerror(cause.errno).lower() if cause.errno else str(cause) or type(cause).__name__
        return f"cannot connect to {err.host}:{err.port}: {why}"
    return str(err) or type(err).__name__
