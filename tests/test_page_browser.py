"""The landing page in real headless Chromium: fill a model's form, submit, read the prediction, its interval and
the contributions chart; the model card plots load. A screenshot of the explained page goes to tests/results/."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator

import httpx
import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service as DriverService
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from tests.conftest import ROOT, Server

pytestmark = pytest.mark.slow
SCREENSHOT = ROOT / "tests" / "results" / "landing-page.png"


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


FIRST_ROW = {"CRIM": "0.00632", "ZN": "18", "INDUS": "2.31", "CHAS": "0", "NOX": "0.538", "RM": "6.575",
             "AGE": "65.2", "DIS": "4.09", "RAD": "1", "TAX": "296", "PTRATIO": "15.3", "B": "396.9", "LSTAT": "4.98"}


def submit_first_row(browser: webdriver.Chrome, model: str) -> str:
    section = browser.find_element(By.ID, f"model-{model}")
    for name, value in FIRST_ROW.items():
        field = section.find_element(By.NAME, name)
        field.clear()
        field.send_keys(value)
    section.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    return result_text(browser, model)


def test_submitting_the_form_shows_the_prediction(browser: webdriver.Chrome, server: Server) -> None:
    browser.get(server.url + "/")
    assert submit_first_row(browser, "linear").startswith("Predicted MEDV: 29.92")


def test_the_form_shows_the_interval_and_a_bar_per_feature_largest_first(browser: webdriver.Chrome,
                                                                          server: Server) -> None:
    browser.get(server.url + "/")
    for model in ("linear", "mlp"):
        record = {k: float(v) for k, v in FIRST_ROW.items()}
        explanation = httpx.post(f"{server.url}/models/{model}/explain", json=record).json()
        text = submit_first_row(browser, model)
        interval = explanation["interval"]
        assert f"90% prediction interval: {interval['lower']:.2f} to {interval['upper']:.2f}" in text
        assert f"baseline {explanation['baseline']:.2f}" in text
        chart = browser.find_element(By.ID, f"model-{model}").find_element(By.CSS_SELECTOR, "svg.bars")
        bars = chart.find_elements(By.TAG_NAME, "rect")
        assert len(bars) == 13
        widths = [float(str(bar.get_attribute("width"))) for bar in bars]
        assert widths == sorted(widths, reverse=True) and widths[0] > 100
        labels = [t.text for t in chart.find_elements(By.TAG_NAME, "text")][::2]
        assert labels[0].startswith(explanation["contributions"][0]["feature"] + " = ")
    SCREENSHOT.parent.mkdir(exist_ok=True)
    browser.set_window_size(1200, browser.execute_script("return document.body.scrollHeight") + 100)
    assert browser.save_screenshot(str(SCREENSHOT))


def test_each_models_card_plot_loads(browser: webdriver.Chrome, server: Server) -> None:
    browser.get(server.url + "/")
    images = [browser.find_element(By.ID, f"model-{m}").find_element(By.TAG_NAME, "img") for m in ("linear", "mlp")]
    loaded = "return arguments[0].every(image => image.complete)"
    WebDriverWait(browser, 10).until(lambda _: browser.execute_script(loaded, images))
    assert all(browser.execute_script("return arguments[0].naturalWidth", image) > 100 for image in images)


def test_an_out_of_range_value_shows_a_warning(browser: webdriver.Chrome, server: Server) -> None:
    browser.get(server.url + "/")
    section = browser.find_element(By.ID, "model-mlp")
    field = section.find_element(By.NAME, "PTRATIO")
    field.clear()
    field.send_keys("0.11")
    section.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    text = result_text(browser, "mlp")
    assert text.startswith("Predicted MEDV:") and "PTRATIO=0.11 is outside the training range" in text
