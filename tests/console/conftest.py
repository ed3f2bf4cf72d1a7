"""A real daemon with its console, and a real browser (Debian's chromium driven by selenium)."""

from __future__ import annotations

import http.client
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

from membraind.daemon_toml import ipc_api, write_daemon_toml
from membraind.harness import SupervisedDaemon, free_port
from tests.service.test_daemon import ENDLESS_TRAINING

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "images"  # the user guide shows them


@dataclass
class ConsoleLab:
    """A running daemon: its home, console port and access token."""

    home: Path
    port: int
    daemon: SupervisedDaemon

    @property
    def token(self) -> str:
        return (self.home / "console-token").read_text().strip()

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def cookie(self) -> str:
        return f"membraind_console_{self.port}={self.token}"

    def request(self, method: str, path: str, headers: dict | None = None, body: str | None = None) -> tuple[int, str]:
        """(status, body text) of one plain HTTP request (no browser, no cookie unless given)."""
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            connection.request(method, path, body=body, headers=headers or {})
            response = connection.getresponse()
            return response.status, response.read().decode("utf-8", "replace")
        finally:
            connection.close()


@pytest.fixture(scope="module")
def console_lab(tmp_path_factory, isbi) -> ConsoleLab:
    """One daemon for the module's tests: tiny CPU training, the console on a free port."""
    tmp = tmp_path_factory.mktemp("console")
    port = free_port()
    config = {
        "service": {"home": tmp / "home", "roots": [isbi], "api": ipc_api(tmp), "web": {"listen": f"127.0.0.1:{port}"}},
        "predict": {"device": "cpu", "runtime": "torch"},
    }  # fmt: skip
    daemon = SupervisedDaemon(write_daemon_toml(tmp / "membraind.toml", config, ENDLESS_TRAINING), tmp / "daemon.log")
    daemon.start()
    yield ConsoleLab(tmp / "home", port, daemon)
    daemon.stop()


@pytest.fixture(scope="module")
def browser():
    """Headless chromium (make test installs Debian's chromium and chromium-driver)."""
    if not (shutil.which(CHROMIUM) and shutil.which(CHROMEDRIVER)):
        pytest.fail("the console tests need Debian's chromium and chromium-driver: `make test` installs them, or "
                    "run `sudo apt-get install -y chromium chromium-driver`")  # fmt: skip
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,900",
                     "--force-device-scale-factor=1"):  # fmt: skip
        options.add_argument(argument)
    options.binary_location = CHROMIUM
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    yield driver
    driver.quit()


def screenshot(driver, name: str) -> Path:
    """Save the whole page as docs/images/console-NAME.png."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    height = driver.execute_script("return Math.min(document.documentElement.scrollHeight, 2400)")
    driver.set_window_size(1280, max(600, height + 140))  # the window's own bars take part of its height
    path = SCREENSHOTS / f"console-{name}.png"
    driver.save_screenshot(str(path))
    driver.set_window_size(1280, 900)
    return path
