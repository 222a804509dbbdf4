"""Telling people: a structured log line always, and a webhook POST (retried with backoff, bounded,
never waited on by serving).

Deliveries follow the Standard Webhooks specification (standardwebhooks.com), so any of its verifying
libraries can check them: ``webhook-id`` (the same on every retry of one event: a receiver can drop a
repeat), ``webhook-timestamp`` (Unix seconds of the attempt) and, when a secret is set in the variable
named by ``[audit] webhook_secret_env``, ``webhook-signature``: ``v1,`` and the base64 HMAC-SHA256 of
``{id}.{timestamp}.{body}`` keyed by the secret (``whsec_`` and base64)."""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import json
import logging
import secrets
import time
import uuid
from typing import Any

import aiohttp

from failsoft import env
from failsoft.config import AuditSpec
from failsoft.errors import ConfigError
from failsoft.tasks import stop

log = logging.getLogger("failsoft.audit")

RETRIES = (0.5, 1.0, 2.0, 4.0)
SECRET_PREFIX = "whsec_"
# The specification asks for 24 to 64 random bytes
SECRET_BYTES = (24, 64)


def new_secret() -> str:
    """A fresh signing secret in the specification's form."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def signing_key(value: str) -> bytes:
    """The HMAC key of a secret written ``whsec_<base64>`` (the prefix optional). ValueError if it is not."""
    text = value.strip().removeprefix(SECRET_PREFIX)
    try:
        key = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("not base64 after the whsec_ prefix") from None
    lo, hi = SECRET_BYTES
    if not lo <= len(key) <= hi:
        raise ValueError(f"{len(key)} bytes once decoded; the specification asks for {lo} to {hi}")
    return key


def sign(key: bytes, msg_id: str, timestamp: int, body: bytes) -> str:
    digest = hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


class Notifier:
    def __init__(self, max_pending: int = 100) -> None:
        self._queue: asyncio.Queue[tuple[str, bytes | None, dict[str, Any]]] = asyncio.Queue(max_pending)
        self._task: asyncio.Task[None] | None = None
        self._keys: dict[str, bytes | None] = {}  # variable name -> its key (None: not set)
        self.sent = self.failed = self.dropped = 0

    def check(self, file: str, specs: dict[str, AuditSpec]) -> None:
        """Read each webhook's signing secret once, at start: a malformed one is a configuration error
        (``specs``: the key in the portfolio file -> its audit table)."""
        for where, spec in specs.items():
            if spec.webhook is None or spec.webhook_secret_env in self._keys:
                continue
            name = spec.webhook_secret_env
            value = env.get(name)
            if not value:
                self._keys[name] = None
                log.warning(
                    json.dumps({"event": "webhook_unsigned", "url": spec.webhook, "secret_env": name})
                )
                continue
            try:
                self._keys[name] = signing_key(value)
            except ValueError as err:
                raise ConfigError(
                    file,
                    f"{where}.webhook_secret_env",
                    f"${name} is not a webhook signing secret: {err}",
                    "set it to whsec_ and base64 of 24-64 random bytes; `failsoft audits webhook-secret` "
                    "prints a new one",
                ) from None

    def notify(self, spec: AuditSpec, event: dict[str, Any]) -> None:
        log.warning(json.dumps(event, default=str))
        if spec.webhook is None:
            return
        try:
            self._queue.put_nowait((spec.webhook, self._keys.get(spec.webhook_secret_env), event))
        except asyncio.QueueFull:
            self.dropped += 1

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="failsoft-audit-notifier")

    async def close(self) -> None:
        await stop(self._task)

    async def _run(self) -> None:
        timeout = aiohttp.ClientTimeout(total=5)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            while True:
                url, key, event = await self._queue.get()
                await self._deliver(session, url, key, event)

    async def _deliver(
        self, session: aiohttp.ClientSession, url: str, key: bytes | None, event: dict[str, Any]
    ) -> None:
        body = json.dumps(event, default=str).encode()
        msg_id = f"msg_{uuid.uuid4().hex}"
        for attempt, pause in enumerate((*RETRIES, None)):
            now = int(time.time())
            headers = {
                "content-type": "application/json",
                "webhook-id": msg_id,
                "webhook-timestamp": str(now),
            }
            if key is not None:
                headers["webhook-signature"] = sign(key, msg_id, now, body)
            try:
                async with session.post(url, data=body, headers=headers) as resp:
                    if resp.status < 300:
                        self.sent += 1
                        return
                    problem = f"HTTP {resp.status}"
            except (aiohttp.ClientError, TimeoutError, OSError) as err:
                problem = f"{type(err).__name__}: {err}"
            if pause is None:
                break
            log.info(
                json.dumps({"event": "webhook_retry", "url": url, "attempt": attempt + 1, "problem": problem})
            )
            await asyncio.sleep(pause)
        self.failed += 1
        log.warning(json.dumps({"event": "webhook_failed", "url": url, "audit_id": event.get("audit_id")}))
