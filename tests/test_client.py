"""failsoft.Client against a real gateway, a stopped one, a hanging one and one answering 500."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from failsoft import Client, NoDefault, Reason
from failsoft.demo.procs import Proc, free_port
from failsoft.errors import InvalidRequest, UnknownModel
from tests import misbehaving
from tests.stack import FEATURES

ROW = {f: 0.1 for f in FEATURES}
TIMEOUT_MS = 150


@pytest.fixture(scope="module")
def hanging() -> Iterator[str]:
    with misbehaving.hanging() as url:
        yield url


@pytest.fixture(scope="module")
def failing() -> Iterator[str]:
    with misbehaving.answering(*misbehaving.FAILING) as url:
        yield url


@pytest.fixture(scope="module")
def garbage() -> Iterator[str]:
    with misbehaving.answering(*misbehaving.GARBAGE) as url:
        yield url


URLS = ["stopped", "hanging", "failing", "garbage"]
REASONS = {"stopped": Reason.UNREACHABLE, "hanging": Reason.TIMEOUT, "failing": Reason.GATEWAY_ERROR,
           "garbage": Reason.BAD_ANSWER}  # fmt: skip


def test_gateway_up_returns_its_outcome(stack: tuple[Proc, Proc]) -> None:
    with Client(stack[1].url, timeout_ms=1000, default=0.5) as client:
        outcome = client.predict("churn", ROW)
    assert outcome.model == "churn" and outcome.tier in {"heavy", "json", "cpu"} and 0 <= outcome.outputs <= 1
    with Client(stack[1].url, default=0.5, strict=True) as client, pytest.raises(UnknownModel) as info:
        client.predict("nope", ROW)
    assert "this portfolio serves churn" in str(info.value), "the gateway's models, not 'none'"
    # a base URL that is not the gateway's root is named as the mistake it is
    with (
        Client(stack[1].url + "/api", timeout_ms=1000, default=0.5, strict=True) as client,
        pytest.raises(InvalidRequest, match="base_url must be the gateway's root"),
    ):
        client.predict("churn", ROW)
    # not strict (the default): the caller's mistake is answered too, degraded, with the gateway's words
    with Client(stack[1].url, timeout_ms=1000, default=0.5) as client:
        outcome = client.predict("nope", ROW)
        bad = client.predict("churn", [])
    assert (outcome.tier, outcome.outputs, outcome.reason) == ("client-default", 0.5, Reason.REJECTED)
    assert "this portfolio serves churn" in outcome.skips[0].detail
    assert (bad.reason, bad.degraded) == (Reason.REJECTED, True) and "empty list" in bad.skips[0].detail


@pytest.mark.parametrize("where", URLS)
def test_sync_default_within_timeout(where: str, hanging: str, failing: str, garbage: str) -> None:
    urls = {"stopped": f"http://127.0.0.1:{free_port()}", "hanging": hanging, "failing": failing,
            "garbage": garbage}  # fmt: skip
    with Client(urls[where], timeout_ms=TIMEOUT_MS, defaults={"churn": 0.2}) as client:
        t = time.perf_counter()
        outcome = client.predict("churn", ROW)
        elapsed = (time.perf_counter() - t) * 1000
    assert (outcome.tier, outcome.degraded, outcome.outputs) == ("client-default", True, 0.2)
    assert outcome.reason is REASONS[where]
    assert outcome.skips[0].tier == "gateway" and outcome.skips[0].detail
    assert elapsed < TIMEOUT_MS + 50


@pytest.mark.parametrize("where", URLS)
async def test_async_default_within_timeout(where: str, hanging: str, failing: str, garbage: str) -> None:
    urls = {"stopped": f"http://127.0.0.1:{free_port()}", "hanging": hanging, "failing": failing,
            "garbage": garbage}  # fmt: skip
    async with Client(urls[where], timeout_ms=TIMEOUT_MS, default=["item-1"]) as client:
        t = time.perf_counter()
        outcome = await client.apredict("recs", {"segment": 1})
        elapsed = (time.perf_counter() - t) * 1000
    assert outcome.outputs == ["item-1"] and outcome.degraded and elapsed < TIMEOUT_MS + 30


async def test_the_gateways_own_default_is_kept_and_served(stack: tuple[Proc, Proc], hanging: str) -> None:
    """After a model's first answer the client fetches the gateway's safe default in the background; with
    the gateway gone it answers that (before a default given in code), with the model's version."""
    client = Client(stack[1].url, timeout_ms=1000, default=0.9)
    await client.apredict("churn", ROW)
    for _ in range(200):  # the background fetch
        if "churn" in client._kept.docs:
            break
        await asyncio.sleep(0.01)
    doc, etag, _ = client._kept.docs["churn"]
    assert (doc["value"], doc["version"], doc["tier"]) == (0.2, "7", "base-rate") and etag
    assert await client.afetch_default("churn") == doc, "an unchanged default is a 304 that keeps it"
    client.base_url = hanging  # the gateway goes away
    client.timeout_s = TIMEOUT_MS / 1000
    cached = await client.apredict("churn", ROW)
    assert (cached.tier, cached.outputs, cached.version, cached.reason) == ("client-cache", 0.2, "7",
                                                                           Reason.TIMEOUT)  # fmt: skip
    # a model the gateway never answered for: the default in code; for a batch, once per row
    assert (await client.apredict("recs", {"segment": 1})).tier == "client-default"
    assert (await client.apredict("churn", [ROW, ROW])).outputs == [0.2, 0.2]
    await client.aclose()
    # no default at all: None, degraded, saying so; a strict client raises
    async with Client(hanging, timeout_ms=TIMEOUT_MS) as client:
        none = await client.apredict("recs", {"segment": 1})
    assert (none.tier, none.outputs, none.degraded) == ("client-none", None, True)
    assert "no default for this model" in none.skips[0].detail
    async with Client(hanging, timeout_ms=TIMEOUT_MS, strict=True) as client:
        with pytest.raises(NoDefault, match="recs"):
            await client.apredict("recs", {"segment": 1})


def test_no_default_says_which_gateway_and_why_in_plain_words() -> None:
    """It had a stray space and aiohttp's "ssl:default" for a plain-HTTP URL."""
    from failsoft.demo.procs import free_port

    url = f"http://127.0.0.1:{free_port()}"
    with Client(url, strict=True) as client, pytest.raises(NoDefault) as info:
        client.predict("recs", {"x": 1})
    said = str(info.value)
    assert said == (
        f"the gateway at {url} could not answer for 'recs' (cannot connect to "
        f"127.0.0.1:{url.rsplit(':', 1)[1]}: connection refused) and the client has no default for it: "
        "pass default= or defaults={model: ...}"
    )


@pytest.mark.parametrize("where", ["up", "stopped"])
def test_a_client_never_closed_leaves_nothing_behind(where: str, stack: tuple[Proc, Proc]) -> None:
    """A script's ``Client(...).predict(...)`` without ``with`` or ``close()``: aiohttp printed "Unclosed
    client session" at exit. Collected, or at exit, the client closes its connections and its loop."""
    url = stack[1].url if where == "up" else f"http://127.0.0.1:{free_port()}"
    script = (
        "import gc, threading\n"
        "from failsoft import Client\n"
        f"c = Client({url!r}, timeout_ms=2000, default=0.2)\n"
        f"print(c.predict('churn', {ROW!r}).tier)\n"
        "del c\n"
        "gc.collect()\n"
        "print(sorted(t.name for t in threading.enumerate()))\n"
        f"kept = Client({url!r}, timeout_ms=2000, default=0.2)\n"
        f"kept.predict('churn', {ROW!r})\n"  # still open at exit
    )
    done = subprocess.run([sys.executable, "-X", "dev", "-c", script], capture_output=True, text=True,
                          timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    tier, threads = done.stdout.splitlines()[:2]
    assert tier in ({"client-default"} if where == "stopped" else {"heavy", "json", "cpu"}), tier
    assert "failsoft-client" not in threads, "a collected client's loop thread ended"
    assert "Unclosed" not in done.stderr and "ResourceWarning" not in done.stderr, done.stderr[-2000:]
