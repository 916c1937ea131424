"""Browser tests of the web console: a real server on loopback driven by the system Chromium.

Every module here is `slow` (it starts a server and a browser). Screenshots of each page go to
a pytest tmp folder (printed at the end, never committed). `--console-readme-images` also
writes docs/img/console-chat.png and docs/img/console-runs.png (the README's screenshots).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
DOCS_IMG = Path(__file__).resolve().parents[2] / "docs" / "img"


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


@pytest.fixture(scope="session")
def screens(tmp_path_factory):
    """Screenshots of each page: a pytest tmp folder (never committed); its path is printed."""
    folder = tmp_path_factory.mktemp("console-screenshots")
    yield folder
    print(f"\nconsole screenshots: {folder}")


@pytest.fixture(scope="session")
def readme_image(readme_images):
    """save(path, name): copy a screenshot to docs/img/<name> when --console-readme-images is given."""
    def save(path: Path, name: str) -> None:
        if readme_images:
            DOCS_IMG.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, DOCS_IMG / name)
    return save
