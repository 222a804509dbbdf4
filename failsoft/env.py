"""Every environment variable failsoft reads, named in one place (docs/reference/environment.md).

| variable | read by | meaning |
|---|---|---|
| ``FAILSOFT_STORE_URL`` | config | the store's URL, over ``[store] url`` (keeps a password out of the file) |
| ``FAILSOFT_DATA_DIR`` | config | the state folder, over ``data_dir`` (a container's volume) |
| ``FAILSOFT_DRAIN_S`` | config | seconds of drain after SIGTERM, over ``[server] drain_s`` |
| ``FAILSOFT_ADMIN_TOKEN`` | serve, the CLI | a control-plane token (owner ``admin``); the CLI sends it |
| ``FAILSOFT_TOKENS_FILE`` | serve | a TOML file of ``owner = "token"`` lines, over ``[server] tokens_file`` |
| ``FAILSOFT_URL`` | the CLI | the gateway the CLI talks to (default ``http://127.0.0.1:8000``) |
| ``FAILSOFT_WEBHOOK_SECRET`` | serve | the default variable holding the audit webhooks' signing secret |
| ``OTEL_*`` | serve | OpenTelemetry's own variables: traces on, exporter, sampler (failsoft/tracing.py) |
| ``USER`` | the CLI | who flips a model when ``--by`` is not given |
| ``CI`` | demo, tests | no live terminal display; tests that need PostgreSQL fail rather than skip |
"""

from __future__ import annotations

import os
from collections.abc import Mapping

STORE_URL = "FAILSOFT_STORE_URL"
DATA_DIR = "FAILSOFT_DATA_DIR"
DRAIN_S = "FAILSOFT_DRAIN_S"
ADMIN_TOKEN = "FAILSOFT_ADMIN_TOKEN"
TOKENS_FILE = "FAILSOFT_TOKENS_FILE"
URL = "FAILSOFT_URL"
WEBHOOK_SECRET = "FAILSOFT_WEBHOOK_SECRET"
DEFAULT_URL = "http://127.0.0.1:8000"


def environ() -> Mapping[str, str]:
    """The process environment, read-only."""
    return os.environ


def get(name: str, default: str | None = None) -> str | None:
    return os.environ.get(name, default)


def user() -> str:
    return os.environ.get("USER", "cli")


def in_ci() -> bool:
    return "CI" in os.environ
