"""Who may change state: bearer tokens, each naming its owner (the name goes into every recorded action).

Tokens come from ``FAILSOFT_ADMIN_TOKEN`` (owner ``admin``) and from a tokens file (TOML, ``owner = "token"``
lines). With neither, ``failsoft serve`` makes one, stores it with owner-only permissions and says
where (the token itself only to a terminal, never to a log file), so the control plane is never open by
accident. Prediction endpoints need no token.
"""

from __future__ import annotations

import hmac
import os
import secrets
import sys
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from failsoft.env import ADMIN_TOKEN
from failsoft.errors import ConfigError

MIN_TOKEN_CHARS = 16
GENERATE = "generate one: python -c 'import secrets; print(secrets.token_urlsafe(32))'"


@dataclass(frozen=True)
class Tokens:
    """token -> owner. ``owner_of`` compares in constant time against every token."""

    by_token: Mapping[bytes, str]
    generated: Path | None = None

    def owner_of(self, authorization: bytes | None) -> str | None:
        scheme, _, given = (authorization or b"").partition(b" ")
        given = given.strip()
        if scheme.lower() != b"bearer" or not given:
            return None
        owner = None
        for token, name in self.by_token.items():
            if hmac.compare_digest(given, token):  # no early exit: every token is compared
                owner = name
        return owner

    def __bool__(self) -> bool:
        return bool(self.by_token)


def read_tokens_file(path: Path) -> dict[bytes, str]:
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(
            str(path), "", "tokens file not found", "create it, or unset the tokens file"
        ) from None
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(
            str(path), "", f"not valid TOML: {err}", 'write one line per owner: alice = "TOKEN"'
        ) from None
    out: dict[bytes, str] = {}
    for owner, token in doc.items():
        if not isinstance(token, str) or len(token.strip()) < MIN_TOKEN_CHARS:
            problem = f"a token must be a string of at least {MIN_TOKEN_CHARS} characters"
            raise ConfigError(str(path), owner, problem, GENERATE)
        out[token.encode()] = owner
    return out


def load_tokens(
    environ: Mapping[str, str], tokens_file: Path | None, data_dir: Path, generate: bool = True
) -> Tokens:
    """The tokens in force; with none configured (and ``generate``), one made and kept in data_dir."""
    by_token: dict[bytes, str] = {}
    if environ.get(ADMIN_TOKEN):
        if len(environ[ADMIN_TOKEN].strip()) < MIN_TOKEN_CHARS:
            raise ConfigError(
                "FAILSOFT_ADMIN_TOKEN",
                "",
                f"a token must be at least {MIN_TOKEN_CHARS} characters (it guards every change)",
                GENERATE,
            )
        by_token[environ[ADMIN_TOKEN].encode()] = "admin"
    if tokens_file is not None:
        by_token.update(read_tokens_file(tokens_file))
    if by_token or not generate:
        return Tokens(by_token)
    path = data_dir / "admin-token"
    if path.exists():
        return Tokens({path.read_text().strip().encode(): "admin"}, generated=path)
    path.parent.mkdir(parents=True, exist_ok=True)
    token = secrets.token_urlsafe(32)
    while token.startswith("-"):  # one in 64 would read as an option on a command line (--token -x...)
        token = secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(token + "\n")
    said = f"failsoft: no control-plane token was configured; made one (owner 'admin'), kept in {path} (0600)"
    if sys.stdout.isatty():
        said += f":\n    {token}\nIt is printed this once, to this terminal."
    else:  # a log file or a pipe keeps what it is given, for whoever may read it: the token stays in its file
        said += f"; the command line reads it with {ADMIN_TOKEN}=$(cat {path})"
    print(said, flush=True)
    return Tokens({token.encode(): "admin"}, generated=path)
