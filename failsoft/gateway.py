"""The command line's calls of a running gateway's control plane: one request, its JSON answer, or why
not (``Refused``: exit code 2 when the call could not be made, 1 when the gateway refused it)."""

from __future__ import annotations

import argparse
import asyncio
import json
from typing import Any

import aiohttp

from failsoft import env

__all__ = ["Refused", "add_options", "call"]


class Refused(Exception):
    """A command line call of the gateway that could not be made (exit code 2) or that the gateway refused
    (exit code 1): the message says why."""

    def __init__(self, message: str, code: int = 2) -> None:
        super().__init__(message)
        self.code = code


def call(
    args: argparse.Namespace,
    method: str,
    path: str,
    body: Any = None,
    params: dict[str, str] | None = None,
    timeout_s: float = 30.0,
) -> Any:
    """The JSON answer of the gateway at --url (FAILSOFT_URL), with --token (FAILSOFT_ADMIN_TOKEN)."""
    headers = {"authorization": f"Bearer {args.token}"} if args.token else {}
    url = args.url.rstrip("/") + path
    try:
        status, text = asyncio.run(_request(method, url, body, params, headers, timeout_s))
    except (aiohttp.ClientError, OSError, TimeoutError, ValueError) as err:
        unset = "" if env.get(env.URL) else f" ({env.URL} is not set: the default was tried)"
        said = str(err) or type(err).__name__
        raise Refused(
            f"cannot reach the gateway at {args.url}{unset}: {said}; set {env.URL} or pass --url"
        ) from None
    try:
        doc = json.loads(text)
    except ValueError:
        raise Refused(f"{url} answered HTTP {status} with no JSON: is it a failsoft gateway?") from None
    if status >= 400:
        said = doc.get("error", doc) if isinstance(doc, dict) else doc
        raise Refused(f"HTTP {status}: {said}", code=1)
    return doc


async def _request(
    method: str, url: str, body: Any, params: dict[str, str] | None, headers: dict[str, str], timeout_s: float
) -> tuple[int, bytes]:
    timeout = aiohttp.ClientTimeout(total=timeout_s)
    async with (
        aiohttp.ClientSession(timeout=timeout) as session,
        session.request(method, url, json=body, params=params, headers=headers) as r,
    ):
        return r.status, await r.read()


def add_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--url", default=env.gateway_url(), help=f"the gateway ({env.URL})")
    p.add_argument(
        "--token",
        default=env.get(env.ADMIN_TOKEN),
        help="a control-plane token (FAILSOFT_ADMIN_TOKEN); its owner is recorded",
    )
