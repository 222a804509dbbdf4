"""Webhook deliveries against a real HTTP receiver on loopback: signed the Standard Webhooks way, the same
id on every retry of one event, unsigned when no secret is set, and a malformed secret refused at start."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest
from standardwebhooks import Webhook

from failsoft.audit.notify import Notifier, new_secret, signing_key
from failsoft.config import AuditSpec
from tests.audit.test_audits import Receiver


async def deliver(receiver: Receiver, secret: str | None, events: int = 1) -> None:
    env = "FAILSOFT_TEST_WEBHOOK_SECRET"
    if secret is not None:
        os.environ[env] = secret
    try:
        spec = AuditSpec(webhook=receiver.url, webhook_secret_env=env)
        notifier = Notifier()
        notifier.check("portfolio.toml", {"audit": spec})
        await notifier.start()
        for i in range(events):
            notifier.notify(spec, {"event": "audit_opened", "audit_id": i})
        for _ in range(100):
            if len(receiver.received) == events:
                break
            await asyncio.sleep(0.05)
        await notifier.close()
    finally:
        os.environ.pop(env, None)


async def test_a_retried_delivery_keeps_its_id_and_is_signed_again() -> None:
    receiver = Receiver(fail_first=1)
    secret = new_secret()
    try:
        await deliver(receiver, secret)
    finally:
        receiver.close()
    assert len(receiver.raw) == 2, "one refusal (503), then delivered"
    (first, h1), (second, h2) = receiver.raw
    assert first == second and h1["webhook-id"] == h2["webhook-id"], "a repeat the receiver can drop"
    assert h1["webhook-id"].startswith("msg_")
    for body, headers in receiver.raw:
        assert Webhook(secret).verify(body, headers) == {"event": "audit_opened", "audit_id": 0}


async def test_events_have_ids_of_their_own_and_go_unsigned_without_a_secret() -> None:
    receiver = Receiver()
    try:
        await deliver(receiver, None, events=2)
    finally:
        receiver.close()
    assert [e["audit_id"] for e in receiver.received] == [0, 1]
    ids = {h["webhook-id"] for _, h in receiver.raw}
    assert len(ids) == 2
    assert all("webhook-signature" not in h and h["webhook-timestamp"].isdigit() for _, h in receiver.raw)


def test_secrets_in_the_specification_form_only() -> None:
    key = signing_key(new_secret())
    assert len(key) == 32
    assert signing_key(new_secret().removeprefix("whsec_")) != key, "the prefix is optional"
    with pytest.raises(ValueError, match="not base64"):
        signing_key("whsec_not base64!")
    with pytest.raises(ValueError, match="24 to 64"):
        signing_key("whsec_c2hvcnQ=")  # "short"


def test_a_malformed_secret_is_a_config_error_naming_file_key_and_fix(tmp_path: Path) -> None:
    path = tmp_path / "portfolio.toml"
    path.write_text(f"""
data_dir = "{tmp_path / "state"}"
[models.m]
[[models.m.tiers]]
kind = "default"
value = 0.5
[models.m.audit]
webhook = "http://127.0.0.1:9/hook"
webhook_secret_env = "MY_HOOK_SECRET"
""")
    env = {**os.environ, "MY_HOOK_SECRET": "hunter2"}
    done = subprocess.run(
        [sys.executable, "-m", "failsoft.cli", "check", str(path), "--load"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, done.stdout + done.stderr
    err = done.stderr
    assert str(path) in err and "models.m.audit.webhook_secret_env" in err and "$MY_HOOK_SECRET" in err
    assert "failsoft audits webhook-secret" in err and "hunter2" not in err, "the fix, never the secret"
