"""A throwaway WordPress: Debian's package (``/usr/share/wordpress``) unpacked into nothing (a folder of
links to it, with a wp-config.php and a wp-content of its own), a fresh database on the machine's MariaDB,
``wp_install`` run from the command line, the plugin linked into its plugins and activated, and ``php -S``
serving it. ``close()`` drops the database; the folder is the caller's."""

from __future__ import annotations

import os
import secrets
import subprocess
from pathlib import Path

from failsoft.demo.procs import free_port, wait_http
from tests.php.conftest import ROOT

WORDPRESS = Path("/usr/share/wordpress")
PLUGIN = ROOT / "integrations" / "wordpress" / "failsoft"
DB_HOST = os.environ.get("FAILSOFT_TEST_MYSQL_HOST", "127.0.0.1")

HERE = Path(__file__).parent / "wp"


def mariadb(sql: str) -> None:
    subprocess.run(
        ["mariadb", "-uroot", "-h", DB_HOST, "-e", sql], check=True, capture_output=True, timeout=60
    )


class Site:
    def __init__(self, folder: Path, gateway_url: str, content: str, deadline_s: float = 0.5) -> None:
        self.folder, self.db = folder, f"failsoft_wp_{secrets.token_hex(4)}"
        self.site = folder / "site"
        self.error_log = folder / "php-errors.log"
        self.site.mkdir(parents=True)
        for entry in WORDPRESS.iterdir():
            if entry.name not in {"wp-config.php", "wp-content", ".htaccess"}:
                (self.site / entry.name).symlink_to(entry)
        content_dir = self.site / "wp-content"
        (content_dir / "plugins").mkdir(parents=True)
        (content_dir / "themes").symlink_to(WORDPRESS / "wp-content" / "themes")
        (content_dir / "plugins" / "failsoft").symlink_to(PLUGIN)
        (self.site / "router.php").write_text((HERE / "router.php").read_text())
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self._config()
        mariadb(f"CREATE DATABASE {self.db}")
        env = {**os.environ, "SITE": str(self.site), "HOST": f"127.0.0.1:{self.port}",
               "GATEWAY": gateway_url, "DEADLINE": str(deadline_s), "CONTENT": content}  # fmt: skip
        done = subprocess.run(["php", "-d", "display_errors=stderr", str(HERE / "install.php")],
                              env=env, capture_output=True, text=True, timeout=120)  # fmt: skip
        if done.returncode != 0:
            raise RuntimeError(f"wp_install failed: {done.stdout[-2000:]} {done.stderr[-2000:]}")

    def _config(self) -> None:
        (self.site / "wp-config.php").write_text(f"""<?php
define('DB_NAME', '{self.db}');
define('DB_USER', 'root');
define('DB_PASSWORD', '');
define('DB_HOST', '{DB_HOST}');
define('DB_CHARSET', 'utf8mb4');
define('WP_HOME', '{self.url}');
define('WP_SITEURL', '{self.url}');
define('WP_CONTENT_DIR', '{self.site}/wp-content');
define('WP_CONTENT_URL', '{self.url}/wp-content');
define('DISABLE_WP_CRON', true);
define('AUTOMATIC_UPDATER_DISABLED', true);
define('WP_HTTP_BLOCK_EXTERNAL', true);
define('WP_ACCESSIBLE_HOSTS', '127.0.0.1');
$table_prefix = 'wp_';
foreach (['AUTH_KEY', 'SECURE_AUTH_KEY', 'LOGGED_IN_KEY', 'NONCE_KEY', 'AUTH_SALT', 'SECURE_AUTH_SALT',
          'LOGGED_IN_SALT', 'NONCE_SALT'] as $k) {{ define($k, '{secrets.token_hex(16)}'); }}
require_once ABSPATH . 'wp-settings.php';
""")

    def start(self) -> Site:
        """``php -S`` with four workers (a page waiting on a hung gateway does not hold up the others)."""
        ini = ["-d", "log_errors=1", "-d", f"error_log={self.error_log}", "-d", "display_errors=0"]
        cmd = [
            "php",
            *ini,
            "-S",
            f"127.0.0.1:{self.port}",
            "-t",
            str(self.site),
            str(self.site / "router.php"),
        ]
        with (self.folder / "php-server.log").open("ab") as log:
            self.proc = subprocess.Popen(
                cmd, stdout=log, stderr=log, env={**os.environ, "PHP_CLI_SERVER_WORKERS": "4"}
            )
        wait_http(self.url + "/wp-login.php", self.proc)
        return self

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        mariadb(f"DROP DATABASE IF EXISTS {self.db}")

    def failsoft_log_lines(self) -> list[str]:
        if not self.error_log.exists():
            return []
        return [line for line in self.error_log.read_text().splitlines() if "failsoft" in line]
