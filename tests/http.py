"""Blocking HTTP calls for tests, on the standard library (the package itself speaks aiohttp): the answer's
status and JSON, whatever the status."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any


class Reply:
    def __init__(self, status: int, body: bytes) -> None:
        self.status_code = status
        self.content = body

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", "replace")

    def json(self) -> Any:
        return json.loads(self.content)


def request(
    method: str, url: str, json_body: Any = None, headers: dict[str, str] | None = None, timeout: float = 10
) -> Reply:
    data = None if json_body is None else json.dumps(json_body).encode()
    hdrs = {"content-type": "application/json", **(headers or {})}
    req = urllib.request.Request(url, data=data, headers=hdrs, method=method)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return Reply(r.status, r.read())
    except urllib.error.HTTPError as err:
        return Reply(err.code, err.read())


def get(url: str, headers: dict[str, str] | None = None, timeout: float = 10) -> Reply:
    return request("GET", url, None, headers, timeout)


def post(url: str, json: Any = None, headers: dict[str, str] | None = None, timeout: float = 10) -> Reply:
    return request("POST", url, json if json is not None else {}, headers, timeout)
