from __future__ import annotations

from pathlib import Path

import pytest

from failsoft.errors import ConfigError
from failsoft.server.auth import Tokens, load_tokens, read_tokens_file

ALICE, BOB = "alice-token-0123456789", "bob-token-0123456789xx"


def test_owner_of_a_bearer_token() -> None:
    tokens = Tokens({ALICE.encode(): "alice", BOB.encode(): "bob"})
    assert tokens.owner_of(f"Bearer {ALICE}".encode()) == "alice"
    assert tokens.owner_of(f"bearer {BOB}".encode()) == "bob"
    for bad in [None, b"", ALICE.encode(), f"Basic {ALICE}".encode(), b"Bearer ", b"Bearer nope"]:
        assert tokens.owner_of(bad) is None


def test_tokens_file_and_environment(tmp_path: Path) -> None:
    f = tmp_path / "tokens.toml"
    f.write_text(f'alice = "{ALICE}"\nbob = "{BOB}"\n')
    tokens = load_tokens({"FAILSOFT_ADMIN_TOKEN": "env-token-0123456789"}, f, tmp_path)
    assert tokens.owner_of(b"Bearer env-token-0123456789") == "admin"
    assert tokens.owner_of(f"Bearer {BOB}".encode()) == "bob"
    assert tokens.generated is None and not (tmp_path / "admin-token").exists()


@pytest.mark.parametrize(("text", "says"), [('alice = "short"', "16 characters"), ("alice = [", "TOML")])
def test_bad_tokens_file_names_the_problem(tmp_path: Path, text: str, says: str) -> None:
    f = tmp_path / "tokens.toml"
    f.write_text(text)
    with pytest.raises(ConfigError, match=says):
        read_tokens_file(f)


@pytest.mark.parametrize("terminal", [True, False])
def test_generated_once_and_reused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, terminal: bool
) -> None:
    monkeypatch.setattr("sys.stdout.isatty", lambda: terminal)
    first = load_tokens({}, None, tmp_path)
    printed = capsys.readouterr().out
    assert first.generated == tmp_path / "admin-token"
    assert (tmp_path / "admin-token").stat().st_mode & 0o777 == 0o600
    token = (tmp_path / "admin-token").read_text().strip()
    assert str(tmp_path / "admin-token") in printed and first.owner_of(f"Bearer {token}".encode()) == "admin"
    # the token itself only to a terminal: a log file or a pipe keeps it for whoever reads them
    assert (token in printed) == terminal, printed
    again = load_tokens({}, None, tmp_path)
    assert capsys.readouterr().out == "" and again.owner_of(f"Bearer {token}".encode()) == "admin"


@pytest.mark.parametrize("short", ["x", "fifteen-chars!!"])
def test_a_short_admin_token_is_refused(tmp_path: Path, short: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_tokens({"FAILSOFT_ADMIN_TOKEN": short}, None, tmp_path)
    assert "FAILSOFT_ADMIN_TOKEN" in str(info.value) and "16 characters" in str(info.value)
