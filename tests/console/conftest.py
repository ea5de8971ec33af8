"""The console's browser tests: Debian's chromium, driven headless by Selenium through
chromium-driver (scripts/test installs both when missing), one browser per module; and where
their screenshots go."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from selenium import webdriver

from tests.consumers.conftest import make_worker_settings

__all__ = ["make_worker_settings"]  # the workers' fixture, for these tests too

ROOT = Path(__file__).resolve().parents[2]


def _binary(*names: str) -> str:
    for name in names:
        found = shutil.which(name)
        if found:
            return found
    pytest.fail(f"no {' or '.join(names)}: apt-get install chromium chromium-driver (scripts/test)")


@pytest.fixture(scope="module")
def browser() -> Iterator[webdriver.Chrome]:
    options = webdriver.ChromeOptions()
    options.binary_location = _binary("chromium", "chromium-browser")
    for argument in (
        "--headless=new",
        "--no-sandbox",  # as root, in a container
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1280,1000",
        "--no-proxy-server",
    ):
        options.add_argument(argument)
    service = webdriver.ChromeService(executable_path=_binary("chromedriver"))
    driver = webdriver.Chrome(options=options, service=service)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture(scope="session")
def artifacts() -> Path:
    """Where the screenshots go: UPLINK_TEST_ARTIFACTS, else var/test-artifacts/console."""
    where = (
        Path(os.environ.get("UPLINK_TEST_ARTIFACTS", ROOT / "var" / "test-artifacts")) / "console"
    )
    where.mkdir(parents=True, exist_ok=True)
    return where
