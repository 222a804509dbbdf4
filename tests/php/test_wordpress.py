"""The WordPress plugin on a real WordPress (Debian's package, MariaDB, ``php -S``), its page in Chromium:
the shortcode renders the model's list; with the gateway killed the same page renders the gateway's Top-10
kept on the site, within the deadline, and the PHP error log gets one line, not one per page view."""

from __future__ import annotations

import re
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from failsoft.demo.procs import Proc
from tests.browser import shot
from tests.helpers import recommend
from tests.php.conftest import TOP10, need, start_gateway
from tests.php.wordpress import WORDPRESS, Site

DEADLINE_S = 0.5
SHORTCODE = '[failsoft model="recs" user_id="7" title="Picked for you"]'


@pytest.fixture
def site(tmp_path: Path) -> Iterator[tuple[Site, Proc]]:
    need("php", "mariadb", paths=(WORDPRESS,))
    gateway = start_gateway(tmp_path / "gateway")
    wp = Site(tmp_path / "wordpress", gateway.url, SHORTCODE, deadline_s=DEADLINE_S)
    try:
        yield wp.start(), gateway
    finally:
        wp.close()
        gateway.stop()


def block(html: str) -> dict[str, Any]:
    """The shortcode's markup: its data attributes and items."""
    found = re.search(r'<div class="failsoft-list[^"]*"([^>]*)>(.*?)</div>', html, re.S)
    assert found, html[-3000:]
    attrs = dict(re.findall(r'data-failsoft-([a-z]+)="([^"]*)"', found.group(1)))
    items = re.findall(r'<li class="failsoft-item">(.*?)</li>', found.group(2))
    return {**attrs, "items": items}


def fetch(url: str) -> str:
    with urllib.request.urlopen(url, timeout=60) as r:
        return r.read().decode()


def test_the_shortcode_renders_the_model_then_the_kept_default(site: tuple[Site, Proc], browser: Any) -> None:
    wp, gateway = site
    page = browser.new_page()
    page.goto(wp.url + "/for-you/")
    assert page.locator(".failsoft-title").inner_text() == "Picked for you"
    items = page.locator(".failsoft-list li").all_inner_texts()
    assert items == recommend({"user_id": 7})
    up = block(page.content())
    assert (up["tier"], up["degraded"], up["reason"]) == ("cpu", "false", "")
    shot(page, "wordpress-gateway-up")

    gateway.kill()  # kill -9: connections refused from now on
    for _ in range(5):  # page views while it is down: each gets the list, one log line in all
        down = block(fetch(wp.url + "/for-you/"))
        assert (down["items"], down["tier"], down["degraded"], down["reason"]) == (
            TOP10, "client-cache", "true", "unreachable")  # fmt: skip
        assert float(down["ms"]) < DEADLINE_S * 1000 + 50, down
    page.goto(wp.url + "/for-you/")
    assert page.locator(".failsoft-list li").all_inner_texts() == TOP10
    shot(page, "wordpress-gateway-down")
    page.close()
    lines = wp.failsoft_log_lines()
    assert len(lines) == 1, lines
    assert "the gateway did not answer for recs (unreachable" in lines[0]
    assert "safe default kept on the site (version 3)" in lines[0]
    assert "PHP Fatal" not in wp.error_log.read_text() and "PHP Warning" not in wp.error_log.read_text()
