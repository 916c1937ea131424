"""Browser tests of the web console: a real server on loopback driven by the system Chromium.

Every module here is `slow` (it starts a server and a browser). `--console-readme-images` also
writes docs/img/console-chat.png and docs/img/console-runs.png (the README's screenshots).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"


def pytest_addoption(parser):
    parser.addoption("--console-readme-images", action="store_true", default=False,
                     help="write docs/img/console-chat.png and console-runs.png from the browser test")


def pytest_collection_modifyitems(items):
    here = Path(__file__).parent
    for item in items:
        if here in Path(item.fspath).parents:
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def readme_images(pytestconfig):
    return pytestconfig.getoption("--console-readme-images")


@pytest.fixture(scope="module")
def browser():
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()) and not shutil.which("chromedriver"):
        pytest.skip("the system Chromium is missing: apt-get install chromium chromium-driver (see .ci/run)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1280,900", "--no-first-run", "--disable-extensions", "--lang=en-US"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def screens(tmp_path_factory):
    """Screenshots of each page: a pytest tmp folder (never committed); its path is printed."""
    folder = tmp_path_factory.mktemp("console-screenshots")
    yield folder
    print(f"\nconsole screenshots: {folder}")
