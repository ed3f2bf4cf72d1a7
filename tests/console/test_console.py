"""The lab console in a real browser against a real daemon: access, forms, live progress,
cancel, the section browser. Each page is saved as docs/images/console-*.png."""

from __future__ import annotations

import re

import pytest
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from membraind.service.journal import SqliteJournal
from tests.console.conftest import screenshot

pytestmark = pytest.mark.isbi

WAIT = 120  # seconds a page may take to show what is waited for (training on a shared CPU)


def journal_count(lab) -> int:
    journal = SqliteJournal(lab.home / "state" / "journal.db")
    try:
        return sum(journal.counts().values())
    finally:
        journal.close()


def test_no_page_asset_or_event_without_the_token(console_lab):
    for path in ("/", "/jobs", "/models", "/static/console.css", "/events", "/new/train"):
        status, text = console_lab.request("GET", path)
        assert status == 401, path
        assert "access link" in text and "Overview" not in text and "queued" not in text
    status, text = console_lab.request("GET", "/?token=not-the-token")
    assert status == 401 and "Wrong access link" in text and "Overview" not in text
    status, text = console_lab.request("GET", "/jobs", {"Cookie": f"membraind_console_{console_lab.port}=guess"})
    assert status == 401
    status, _ = console_lab.request("GET", f"/?token={console_lab.token}")
    assert status == 303  # the token becomes a cookie
    status, text = console_lab.request("GET", "/", {"Cookie": console_lab.cookie})
    assert status == 200 and "Overview" in text
    assert oct((console_lab.home / "console-token").stat().st_mode & 0o777) == "0o600"


def test_other_host_names_are_refused(console_lab):
    """DNS rebinding: a page of another site resolving its name to 127.0.0.1 gets nothing."""
    status, text = console_lab.request("GET", "/", {"Host": f"rebind.example:{console_lab.port}",
                                                    "Cookie": console_lab.cookie})  # fmt: skip
    assert status == 400 and "host name" in text and "Overview" not in text


def test_cross_site_form_post_is_refused(console_lab, isbi):
    before = journal_count(console_lab)
    _, form = console_lab.request("GET", "/new/segment2d", {"Cookie": console_lab.cookie})
    csrf = re.search(r'name="csrf" value="([0-9a-f]+)"', form).group(1)
    body = f"csrf={csrf}&membrane={isbi / 'train' / 'label'}&out={console_lab.home / 'cells'}"
    headers = {"Cookie": console_lab.cookie, "Content-Type": "application/x-www-form-urlencoded"}
    status, text = console_lab.request("POST", "/new/segment2d", headers | {"Origin": "http://evil.example"}, body)
    assert status == 403 and "another site" in text
    own = headers | {"Origin": console_lab.base}
    status, text = console_lab.request("POST", "/new/segment2d", own, body.replace(csrf, "0" * 32))
    assert status == 403 and "form token" in text
    assert journal_count(console_lab) == before


def _bar_width(driver) -> float:
    style = driver.find_element(By.CSS_SELECTOR, ".bar span").get_attribute("style")
    return float(re.search(r"width:\s*([\d.]+)%", style).group(1))


def _epochs(driver) -> int:
    curves = driver.find_elements(By.CSS_SELECTOR, "svg.curve")
    return int(curves[0].get_attribute("data-epochs")) if curves else 0


def _state(driver) -> str:
    return driver.find_element(By.CSS_SELECTOR, "h1 [data-job-state]").text


def _fill(driver, values: dict[str, str]) -> None:
    for name, value in values.items():
        field = driver.find_element(By.NAME, name)
        field.clear()
        field.send_keys(value)


def test_train_watch_cancel_predict_and_look(console_lab, browser, isbi):
    # The page's live part is replaced as events arrive: an element found a moment ago may be gone.
    wait = WebDriverWait(browser, WAIT, poll_frequency=0.1, ignored_exceptions=[StaleElementReferenceException])
    browser.get(f"{console_lab.base}/?token={console_lab.token}")
    assert browser.current_url == f"{console_lab.base}/"  # the token left the address bar for a cookie
    wait.until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-live") == "connected")
    screenshot(browser, "overview")
    browser.get(f"{console_lab.base}/new")
    screenshot(browser, "new")

    # A path outside the daemon's roots: refused, the field named, nothing queued.
    browser.get(f"{console_lab.base}/new/train")
    _fill(browser, {"em": "/etc", "labels": str(isbi / "train" / "label"), "mapping": "isbi", "model": "isbi-console"})
    browser.find_element(By.ID, "submit").click()
    error = wait.until(lambda d: d.find_elements(By.ID, "error-em"))[0]
    assert "em: /etc is outside the folders this daemon may use" in error.text
    assert not browser.find_elements(By.ID, "error-labels")
    browser.execute_script("document.getElementById('error-em').scrollIntoView()")
    screenshot(browser, "form-error")

    # Corrected: the job starts; its progress bar and learning curve move while the page is open.
    _fill(browser, {"em": str(isbi / "train" / "image")})
    browser.find_element(By.ID, "submit").click()
    wait.until(lambda d: "/jobs/" in d.current_url)
    job_url = browser.current_url
    wait.until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-live") == "connected")
    wait.until(lambda d: _state(d) == "running")
    first = wait.until(lambda d: _bar_width(d) or None)
    wait.until(lambda d: _bar_width(d) != first)
    wait.until(lambda d: _epochs(d) >= 1)
    wait.until(lambda d: _epochs(d) >= 2)  # the curve grew without reloading the page
    assert browser.current_url == job_url
    screenshot(browser, "job-training")

    wait.until(lambda d: d.find_element(By.XPATH, "//button[text()='Cancel']").click() or True)
    wait.until(lambda d: _state(d) == "cancelled")
    screenshot(browser, "job-cancelled")

    # The cancelled run kept its best epoch as version 1 of the lab model.
    browser.get(f"{console_lab.base}/models")
    assert "isbi-console" in browser.find_element(By.TAG_NAME, "main").text
    screenshot(browser, "models")
    browser.get(f"{console_lab.base}/models/isbi-console")
    wait.until(lambda d: _epochs(d) >= 2)
    screenshot(browser, "model")
    browser.find_element(By.XPATH, "//section[@id='v1']//a[text()='Predict']").click()
    assert browser.find_element(By.NAME, "models").get_attribute("value") == "isbi-console@v1"

    # Predict two test sections, follow it to done, and look at the result.
    _fill(browser, {"volume": str(isbi / "test" / "image"), "out": str(console_lab.home / "predicted")})
    browser.find_element(By.CSS_SELECTOR, "select[name='target.mode'] option[value='box']").click()
    _fill(browser, {"target.box.x0": "0", "target.box.x1": "512", "target.box.y0": "0", "target.box.y1": "512",
                    "target.box.z0": "0", "target.box.z1": "2"})  # fmt: skip
    browser.find_element(By.ID, "submit").click()
    wait.until(lambda d: "/jobs/" in d.current_url)
    look = wait.until(lambda d: d.find_elements(By.LINK_TEXT, "Look at the result"))  # shown once it is done
    screenshot(browser, "job-done")
    look[0].click()
    loaded = "return ['em', 'overlay'].every(id => document.getElementById(id).complete && document.getElementById(id).naturalWidth > 0)"
    wait.until(lambda d: d.execute_script(loaded))
    screenshot(browser, "look")
    browser.find_element(By.ID, "next").click()
    wait.until(lambda d: "section 1" in d.find_element(By.TAG_NAME, "h1").text and d.execute_script(loaded))

    browser.get(f"{console_lab.base}/jobs")
    screenshot(browser, "jobs")
    browser.get(f"{console_lab.base}/look/groundtruth?em={isbi / 'train' / 'image'}&labels={isbi / 'train' / 'label'}"
                "&mapping=isbi")  # fmt: skip
    wait.until(lambda d: d.execute_script("var i = document.getElementById('contact-sheet'); return i && i.complete && i.naturalWidth > 0"))
    screenshot(browser, "groundtruth")
