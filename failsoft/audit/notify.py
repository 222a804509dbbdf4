"""Telling people: a structured log line always, and a webhook POST (retried with backoff, bounded,
never waited on by serving)."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import aiohttp

from failsoft.tasks import stop

log = logging.getLogger("failsoft.audit")

RETRIES = (0.5, 1.0, 2.0, 4.0)


class Notifier:
    def __init__(self, max_pending: int = 100) -> None:
        self._queue: asyncio.Queue[tuple[str, dict[str, Any]]] = asyncio.Queue(max_pending)
        self._task: asyncio.Task[None] | None = None
        self.sent = self.failed = self.dropped = 0

    def notify(self, webhook: str | None, event: dict[str, Any]) -> None:
        log.warning(json.dumps(event, default=str))
        if webhook is None:
            return
        try:
            self._queue.put_nowait((webhook, event))
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
                url, event = await self._queue.get()
                await self._deliver(session, url, event)

    async def _deliver(self, session: aiohttp.ClientSession, url: str, event: dict[str, Any]) -> None:
        for attempt, pause in enumerate((*RETRIES, None)):
            try:
                async with session.post(url, json=event) as resp:
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
