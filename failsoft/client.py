"""The application-side safety net: a small client whose own last-resort answer serves when the gateway
itself cannot (unreachable, slower than the client's timeout, a 5xx, or an answer that is not failsoft's).

>>> client = Client("http://failsoft:8000", timeout_ms=80, defaults={"recs": TOP10})   # doctest: +SKIP
>>> outcome = client.predict("recs", {"segment": 3, "hour": 18})                        # doctest: +SKIP
>>> outcome.tier, outcome.degraded                                                       # doctest: +SKIP
('hourly-remote', False)

When the gateway answers, its outcome is returned as it is. When it cannot, the client answers with, in
this order: the gateway's own safe default for that model as the client last saw it (``GET
/v1/models/{m}/default``, fetched in the background after the model's first answer and refreshed every
``refresh_s`` with its ETag; ``tier="client-cache"``), else the default given in code (``defaults``, else
``default``; ``tier="client-default"``). The outcome says ``degraded=True`` and why: ``unreachable``,
``timeout``, ``gateway_error`` (a 5xx) or ``bad_answer``. A 4xx is the caller's mistake: with
``strict=True`` it raises (InvalidRequest, UnknownModel); by default it is answered like the rest, reason
``rejected``, with the gateway's message. The PHP client (clients/php) keeps the same contract.
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
    """The gateway could not answer and a strict client has no default for the model (neither the
    gateway's, kept, nor one given in code); a client that is not strict answers None, degraded."""


class Client:
    def __init__(
        self,
        base_url: str,
        timeout_ms: float = 100.0,
        default: Any = _MISSING,
        defaults: dict[str, Any] | None = None,
        cache: bool = True,
        headers: dict[str, str] | None = None,
        strict: bool = False,
        refresh_s: float = 300.0,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout_s = timeout_ms / 1000.0
        self.default = default
        self.defaults = dict(defaults or {})
        self.cache = cache
        self.strict = strict
        self.refresh_s = refresh_s
        self._kept = _Kept()
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
                self._finalizer = weakref.finalize(
                    self, _stop_sync, self._sync, self._sessions, self._kept.tasks
                )
            return self._sync

    # ---- the two faces ----------------------------------------------------------------------------------

    def predict(self, model: str, inputs: Any, id: str | None = None) -> Outcome:
        """The gateway's outcome, or the client's own default within ``timeout_ms``."""
        return self._sync_loop().run(self.apredict(model, inputs, id))

    async def apredict(self, model: str, inputs: Any, id: str | None = None) -> Outcome:
        """``predict`` for asyncio code; the whole call is bounded by ``timeout_ms``. ``inputs``: one row
        (a dict), or a list of rows, whose answer is a list (the client's default once per row)."""
        outcome = await self._call(model, inputs, id)
        if isinstance(inputs, list) and outcome.tier.startswith("client-"):
            return msgspec.structs.replace(outcome, outputs=[outcome.outputs] * len(inputs))
        return outcome

    async def _call(self, model: str, inputs: Any, id: str | None) -> Outcome:
        session = self._client()
        request_id = id or self._next_id()
        started = time.perf_counter()
        body = _encode({"inputs": inputs, "id": request_id})
        try:
            async with asyncio.timeout(self.timeout_s):
                async with session.post(
                    self._url(model), data=body, headers={"x-request-id": request_id}
                ) as resp:
                    status, content = resp.status, await resp.read()
        except TimeoutError:
            said = f"no answer within {self.timeout_s * 1000:g} ms"
            return self._fallback(model, request_id, Reason.TIMEOUT, said, started)
        except (aiohttp.ClientError, OSError) as err:
            return self._fallback(model, request_id, Reason.UNREACHABLE, _unreachable(err), started)
        return self._read(model, request_id, status, content, started)

    def fetch_default(self, model: str) -> dict[str, Any] | None:
        """Fetch and keep ``model``'s safe default from the gateway now (at start-up, say, so that a
        gateway lost before the model's first answer still leaves the client the gateway's default).
        Returns the gateway's document, or None when it could not be had within ``timeout_ms``."""
        return self._sync_loop().run(self.afetch_default(model))

    async def afetch_default(self, model: str) -> dict[str, Any] | None:
        """``fetch_default`` for asyncio code."""
        return await self._kept.fetch(self._client(), self._url(model, "default"), model, self.timeout_s)

    def close(self) -> None:
        """Close the synchronous face's connections and its event loop."""
        with self._lock:
            sync, self._sync = self._sync, None
        if sync is not None:
            self._finalizer.detach()
            sync.stop(self.aclose())

    async def aclose(self) -> None:
        """Close this event loop's connections (and end its background fetches of defaults)."""
        await _close(self._sessions.pop(asyncio.get_running_loop(), None), self._kept.tasks)

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

    def _url(self, model: str, what: str = "predict") -> str:
        return f"{self.base_url}/v1/models/{model}/{what}"

    def _read(self, model: str, request_id: str, status: int, body: bytes, started: float) -> Outcome:
        if status >= 500:
            said = f"gateway answered HTTP {status}"
            return self._fallback(model, request_id, Reason.GATEWAY_ERROR, said, started)
        if status >= 400:
            try:
                self._refused(model, status, body)
            except (InvalidRequest, UnknownModel) as err:
                if self.strict:
                    raise
                return self._fallback(model, request_id, Reason.REJECTED, str(err), started)
        try:
            outcome = _decode(body)
        except msgspec.DecodeError as err:
            said = f"not a failsoft answer (HTTP {status}): {err}"
            return self._fallback(model, request_id, Reason.BAD_ANSWER, said, started)
        if self.cache and self._kept.stale(model, self.refresh_s):
            self._kept.refresh(self._client(), self._url(model, "default"), model)
        return outcome

    def _refused(self, model: str, status: int, body: bytes) -> None:
        """The typed error of a 4xx."""
        try:
            said = str(msgspec.json.decode(body).get("error", ""))
        except (msgspec.DecodeError, AttributeError):
            said = ""
        if status == 404 and said.startswith("unknown model"):
            known = said.partition("serves ")[2]
            raise UnknownModel(model, [] if known == "none" else known.split(", "))
        if status == 404:
            raise InvalidRequest(
                f"{self.base_url}/v1/models/{model}/predict answered 404 ({said or body[:80]!r}): "
                "base_url must be the gateway's root, e.g. http://host:8000"
            )
        raise InvalidRequest(f"gateway refused the request (HTTP {status}): {said or body[:300]!r}")

    def _fallback(self, model: str, request_id: str, reason: Reason, detail: str, started: float) -> Outcome:
        version = ""
        kept = self._kept.docs.get(model) if self.cache else None
        if kept is not None:
            tier, value, version = "client-cache", kept[0]["value"], str(kept[0].get("version") or "")
        elif model in self.defaults:
            tier, value = "client-default", self.defaults[model]
        elif self.default is not _MISSING:
            tier, value = "client-default", self.default
        elif self.strict:
            raise NoDefault(
                f"the gateway at {self.base_url} could not answer for {model!r} ({detail}) and the client "
                "has no default for it: pass default= or defaults={model: ...}"
            )
        else:
            tier, value = "client-none", None
            detail += "; the client has no default for this model (pass default= or defaults={model: ...})"
        return Outcome(
            id=request_id,
            model=model,
            version=version,
            tier=tier,
            degraded=True,
            reason=reason,
            outputs=value,
            latency_ms=(time.perf_counter() - started) * 1000.0,
            skips=(Skip("gateway", reason, detail[:300]),),
        )


class _Kept:
    """The gateway's safe defaults as the client last saw them: model -> (document, ETag, monotonic time
    fetched). What a background fetch holds (never the client, which may be collected meanwhile)."""

    def __init__(self) -> None:
        self.docs: dict[str, tuple[dict[str, Any], str, float]] = {}
        self.fetching: set[str] = set()
        self.tasks: set[asyncio.Task[Any]] = set()

    async def fetch(
        self, session: aiohttp.ClientSession, url: str, model: str, timeout_s: float
    ) -> dict[str, Any] | None:
        kept = self.docs.get(model)
        headers = {"if-none-match": kept[1]} if kept else {}
        try:
            async with asyncio.timeout(timeout_s):
                async with session.get(url, headers=headers) as resp:
                    status, content, etag = resp.status, await resp.read(), resp.headers.get("etag", "")
        except (TimeoutError, aiohttp.ClientError, OSError):
            return None
        if status == 304 and kept:
            self.docs[model] = (kept[0], kept[1], time.monotonic())
            return kept[0]
        if status != 200:
            return None
        try:
            doc = msgspec.json.decode(content)
        except msgspec.DecodeError:
            return None
        if not isinstance(doc, dict) or "value" not in doc:
            return None
        self.docs[model] = (doc, etag, time.monotonic())
        return doc

    def stale(self, model: str, refresh_s: float) -> bool:
        """No copy of the model's default, or one older than ``refresh_s``, and no fetch under way."""
        kept = self.docs.get(model)
        return model not in self.fetching and not (kept and time.monotonic() - kept[2] < refresh_s)

    def refresh(self, session: aiohttp.ClientSession, url: str, model: str) -> None:
        """Fetch the model's safe default in the background (its ETag makes an unchanged one a 304)."""
        self.fetching.add(model)
        task = asyncio.get_running_loop().create_task(self._refresh(session, url, model))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _refresh(self, session: aiohttp.ClientSession, url: str, model: str) -> None:
        try:
            await self.fetch(session, url, model, timeout_s=2.0)
        finally:
            self.fetching.discard(model)


def _stop_sync(
    sync: LoopThread,
    sessions: dict[asyncio.AbstractEventLoop, aiohttp.ClientSession],
    tasks: set[asyncio.Task[Any]],
) -> None:
    """The synchronous face's connections closed on its own loop, then the loop stopped (from
    ``weakref.finalize``: it holds these, never the client)."""
    session = sessions.pop(sync.loop, None)
    if threading.current_thread() is sync.thread:  # collected on its own loop: nothing may wait there
        sync.loop.call_soon(sync.loop.stop)
        return
    sync.stop(_close(session, tasks))


async def _close(session: aiohttp.ClientSession | None, tasks: set[asyncio.Task[Any]]) -> None:
    """This loop's background fetches ended, then its connections closed."""
    loop = asyncio.get_running_loop()
    mine = [t for t in tasks if t.get_loop() is loop]
    for task in mine:
        task.cancel()
    await asyncio.gather(*mine, return_exceptions=True)
    if session is not None:
        await session.close()


def _unreachable(err: BaseException) -> str:
    """Why a connection failed, in words ("connection refused"), without aiohttp's own wording (its
    "ssl:default" shows even for a plain-HTTP URL)."""
    if isinstance(err, aiohttp.ClientConnectorError):
        cause = err.os_error
        why = os.strerror(cause.errno).lower() if cause.errno else str(cause) or type(cause).__name__
        return f"cannot connect to {err.host}:{err.port}: {why}"
    return str(err) or type(err).__name__
