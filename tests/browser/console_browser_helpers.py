"""Small Selenium helpers of the console's browser tests (the server comes from fixtures.console_server)."""

from __future__ import annotations


def wait(driver, condition, timeout=20):
    """Poll `condition` until truthy; an element replaced by a page load mid-check is looked up again."""
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException, WebDriverException
    from selenium.webdriver.support.ui import WebDriverWait

    def polled(d):
        try:
            return condition(d)
        except WebDriverException as e:
            # Chrome reports an element whose page is being replaced either as a stale reference or,
            # mid-navigation, as this generic inspector error: both mean "look again".
            if "does not belong to the document" in str(e):
                return False
            raise

    return WebDriverWait(driver, timeout, poll_frequency=0.05,
                         ignored_exceptions=(StaleElementReferenceException, NoSuchElementException)).until(polled)


def css(driver, selector):
    from selenium.webdriver.common.by import By

    return driver.find_element(By.CSS_SELECTOR, selector)


def css_all(driver, selector):
    from selenium.webdriver.common.by import By

    return driver.find_elements(By.CSS_SELECTOR, selector)


def shot(driver, folder, name, width=1280, height=900):
    """A full-page screenshot `folder/name.png` at `width` (the window grows to the page's height)."""
    driver.set_window_size(width, height)
    full = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(width, max(height, min(int(full) + 120, 2400)))
    path = folder / f"{name}.png"
    driver.save_screenshot(str(path))
    driver.set_window_size(1280, 900)
    return path


def login_with_key(driver, url, secret):
    driver.delete_all_cookies()
    driver.get(url + "/ui/login")
    css(driver, "#api_key").send_keys(secret)
    css(driver, "#login-key").click()
    wait(driver, lambda d: "/ui/login" not in d.current_url)


def ask(driver, question, timeout=60):
    """Type `question`, send it, wait until the streamed answer is complete; returns its <article>."""
    before = len(css_all(driver, "article.msg.assistant"))
    css(driver, "#question").send_keys(question)
    css(driver, "#send").click()
    wait(driver, lambda d: len(css_all(d, "article.msg.assistant")) > before)
    answer = css_all(driver, "article.msg.assistant")[-1]
    wait(driver, lambda d: answer.get_attribute("data-done") in ("true", "error"), timeout=timeout)
    assert answer.get_attribute("data-done") == "true", answer.text
    return answer
