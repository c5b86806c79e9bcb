"""The landing page in real headless Chromium: fill a model's form, submit, read the prediction."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service as DriverService
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from tests.conftest import Server

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def browser() -> Iterator[webdriver.Chrome]:
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    assert chromium and driver, "Debian's chromium and chromium-driver are installed by `make test`"
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    profile = tempfile.mkdtemp(prefix="chromium-profile-")
    # This machine has no network beyond loopback: no background fetches, no sandbox (root), no GPU.
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
                 "--no-first-run", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", f"--user-data-dir={profile}"):
        options.add_argument(flag)
    chrome = webdriver.Chrome(options=options, service=DriverService(executable_path=driver))
    chrome.set_page_load_timeout(30)
    try:
        yield chrome
    finally:
        chrome.quit()
        shutil.rmtree(profile, ignore_errors=True)


def result_text(browser: webdriver.Chrome, model: str) -> str:
    section = browser.find_element(By.ID, f"model-{model}")
    WebDriverWait(browser, 10).until(lambda _: section.find_element(By.CLASS_NAME, "result").text not in ("", "…"))
    return str(section.find_element(By.CLASS_NAME, "result").text)


def test_submitting_the_form_shows_the_prediction(browser: webdriver.Chrome, server: Server) -> None:
    browser.get(server.url + "/")
    section = browser.find_element(By.ID, "model-linear")
    first_row = {"CRIM": "0.00632", "ZN": "18", "INDUS": "2.31", "CHAS": "0", "NOX": "0.538", "RM": "6.575",
                 "AGE": "65.2", "DIS": "4.09", "RAD": "1", "TAX": "296", "PTRATIO": "15.3", "B": "396.9",
                 "LSTAT": "4.98"}
    for name, value in first_row.items():
        field = section.find_element(By.NAME, name)
        field.clear()
        field.send_keys(value)
    section.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    assert result_text(browser, "linear").startswith("Predicted MEDV: 29.92")


def test_an_out_of_range_value_shows_a_warning(browser: webdriver.Chrome, server: Server) -> None:
    browser.get(server.url + "/")
    section = browser.find_element(By.ID, "model-mlp")
    field = section.find_element(By.NAME, "PTRATIO")
    field.clear()
    field.send_keys("0.11")
    section.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    text = result_text(browser, "mlp")
    assert text.startswith("Predicted MEDV:") and "PTRATIO=0.11 is outside the training range" in text
