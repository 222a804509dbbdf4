"""The command line's calls of a running gateway's control plane: one request, its JSON answer, or why
not (``Refused``: exit code 2 when the call could not be made, 1 when the gateway refused it)."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any

import aiohttp

from failsoft import env

__all__ = ["Refused", "add_options", "call", "target"]

TOKEN_SOURCES = (
    f"a control-plane token comes from {env.ADMIN_TOKEN} or --token; the one `failsoft serve` made is in "
    f"<data_dir>/admin-token: export {env.ADMIN_TOKEN}=$(cat <data_dir>/admin-token)"
)


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
    """The JSON answer of the gateway at --url (FAILSOFT_URL), with --token (FAILSOFT_ADMIN_TOKEN). The
    first call of a command says on stderr which gateway it talks to, and why that one."""
    base, source = target(args)
    if not getattr(args, "gateway_told", False):
        print(f"gateway: {base} ({source})", file=sys.stderr)
        args.gateway_told = True
    token = args.token or env.get(env.ADMIN_TOKEN)
    headers = {"authorization": f"Bearer {token}"} if token else {}
    url = base.rstrip("/") + path
    try:
        status, text = asyncio.run(_request(method, url, body, params, headers, timeout_s))
    except (aiohttp.ClientError, OSError, TimeoutError, ValueError) as err:
        said = str(err) or type(err).__name__
        raise Refused(
            f"cannot reach the gateway at {base} ({source}): {said}; set {env.URL} or pass --url"
        ) from None
    try:
        doc = json.loads(text)
    except ValueError:
        raise Refused(f"{url} answered HTTP {status} with no JSON: is it a failsoft gateway?") from None
    if status >= 400:
        said = doc.get("error", doc) if isinstance(doc, dict) else doc
        if status == 401:
            said = "no token was sent" if not token else "this gateway does not know the token sent"
            said += f"; {TOKEN_SOURCES}"
        raise Refused(f"HTTP {status}: {said}", code=1)
    return doc


def target(args: argparse.Namespace) -> tuple[str, str]:
    """The gateway a command talks to, and where that came from."""
    if args.url:
        return args.url, "--url"
    url = env.get(env.URL)
    if url:
        return url, env.URL
    return env.DEFAULT_URL, f"the default: {env.URL} is not set"


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
    p.add_argument(
        "--url", default=None, help=f"the gateway to talk to (default: ${env.URL}, else {env.DEFAULT_URL})"
    )
    p.add_argument(
        "--token",
        default=None,
        help=f"a control-plane token (default: ${env.ADMIN_TOKEN}; the one `serve` made is in "
        "<data_dir>/admin-token); its owner is recorded",
    )
