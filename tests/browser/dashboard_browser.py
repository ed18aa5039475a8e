"""What a user does in the dashboard, in words a test reads: open, click, look.

Streamlit reruns the whole script after every interaction; the app root says
when a run is over (`data-test-script-state`), so every action waits for that
instead of sleeping. Every wait has a deadline.
"""

from __future__ import annotations

from pathlib import Path

from selenium.common.exceptions import StaleElementReferenceException, WebDriverException
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import WebDriverWait

TIMEOUT = 20.0
ROW_HEIGHT = 35  # st.dataframe's default row (and header) height in pixels


def _literal(text: str) -> str:
    """An XPath string literal for `text` (which may hold either quote)."""
    if "'" not in text:
        return f"'{text}'"
    if '"' not in text:
        return f'"{text}"'
    return "concat(" + ', "\'", '.join(f"'{part}'" for part in text.split("'")) + ")"


class DashboardBrowser:
    def __init__(self, driver: WebDriver, screenshots: Path) -> None:
        self.driver = driver
        self.screenshots = screenshots

    # ---- waiting ----------------------------------------------------------------------

    def wait(self, condition: object, what: str, timeout: float = TIMEOUT) -> object:
        def probe(_driver: WebDriver) -> object:
            try:
                return condition() if callable(condition) else condition
            except (StaleElementReferenceException, WebDriverException):
                return False

        return WebDriverWait(self.driver, timeout, poll_frequency=0.1).until(
            probe, f"timed out after {timeout}s waiting for {what}"
        )

    def idle(self) -> bool:
        roots = self.driver.find_elements(By.CSS_SELECTOR, '[data-testid="stApp"]')
        if not roots:
            return False
        state = roots[0].get_attribute("data-test-script-state")
        connection = roots[0].get_attribute("data-test-connection-state")
        return state == "notRunning" and connection == "CONNECTED"

    def settle(self, timeout: float = TIMEOUT) -> None:
        """Until the script run an action started is over (it may start a moment late)."""
        self.wait(self.idle, "the dashboard to finish its run", timeout)
        # A click's rerun reaches the server after the click returns: wait out the
        # short gap where the old run looks finished, then wait for the new one.
        try:
            WebDriverWait(self.driver, 0.4, poll_frequency=0.05).until(lambda _d: not self.idle())
        except WebDriverException:
            return
        self.wait(self.idle, "the dashboard to finish its run", timeout)

    # ---- navigation and actions -------------------------------------------------------

    def open(self, base_url: str, page: str | None = None) -> None:
        url = base_url + (f"/?page={page.replace(' ', '+')}" if page else "/")
        self.driver.get(url)
        self.wait(self.idle, f"the dashboard at {url}", timeout=40)
        if page:
            self.wait(lambda: self.heading(page), f"the {page} page")

    def go(self, page: str) -> None:
        """Pick a page in the sidebar, as a user does."""
        label = self.driver.find_element(
            By.XPATH,
            f'//*[@data-testid="stSidebar"]//label[.//p[normalize-space()={_literal(page)}]]',
        )
        label.click()
        self.settle()
        self.wait(lambda: self.heading(page), f"the {page} page")

    def sidebar_pages(self) -> list[str]:
        labels = self.driver.find_elements(
            By.CSS_SELECTOR, '[data-testid="stSidebar"] [role="radiogroup"] label'
        )
        return [label.text.strip() for label in labels if label.text.strip()]

    def heading(self, text: str) -> bool:
        return any(
            h.text.strip() == text for h in self.driver.find_elements(By.CSS_SELECTOR, "h1, h2")
        )

    def buttons(self, label: str) -> list[WebElement]:
        return [
            b
            for b in self.driver.find_elements(
                By.XPATH, f"//button[normalize-space()={_literal(label)}]"
            )
            if b.is_displayed()
        ]

    def click(self, label: str, index: int = 0) -> None:
        found = self.wait(lambda: self.buttons(label), f"a button {label!r}")
        assert isinstance(found, list)
        found[index].click()
        self.settle()

    def click_radio(self, label: str) -> None:
        """Pick the option with this label of a radio group in the main area."""
        xpath = (
            '//*[@data-testid="stMain"]//*[@role="radiogroup"]'
            f"//label[.//p[normalize-space()={_literal(label)}]]"
        )
        self.wait(lambda: self.driver.find_elements(By.XPATH, xpath), f"the option {label!r}")
        self.driver.find_element(By.XPATH, xpath).click()
        self.settle()

    def click_table_row(self, key: str, row: int) -> None:
        """Select a row of the st.dataframe with this key by its row marker (the grid is
        a canvas: the click goes to the marker's position in the row)."""
        css = f'.st-key-{key} [data-testid="stDataFrame"]'
        self.wait(lambda: self.count(css) == 1, f"the table {key}")
        grid = self.driver.find_element(By.CSS_SELECTOR, css)
        self.driver.execute_script("arguments[0].scrollIntoView({block: 'center'});", grid)
        x = -grid.size["width"] / 2 + 18
        y = -grid.size["height"] / 2 + ROW_HEIGHT * (row + 1.5)
        ActionChains(self.driver).move_to_element_with_offset(
            grid, int(x), int(y)
        ).click().perform()
        self.settle()

    def type_into(self, label: str, text: str) -> None:
        """Replace the value of the text/number input with this label (Enter submits)."""
        # Streamlit renders a page element by element: the heading can be there
        # before the input below it.
        xpath = f"//label[.//p[normalize-space()={_literal(label)}]]/following::input[1]"
        self.wait(
            lambda: self.driver.find_elements(By.XPATH, xpath), f"an input labelled {label!r}"
        )
        field = self.driver.find_element(By.XPATH, xpath)
        field.click()
        field.send_keys("\ue009a")  # Ctrl+A
        field.send_keys(text)

    # ---- what the user sees -----------------------------------------------------------

    def text(self) -> str:
        return self.driver.find_element(By.TAG_NAME, "body").text

    def shows(self, text: str, timeout: float = TIMEOUT) -> None:
        self.wait(lambda: text in self.text(), f"{text!r} on the page", timeout)

    def count(self, css: str) -> int:
        return len([e for e in self.driver.find_elements(By.CSS_SELECTOR, css) if e.is_displayed()])

    def exceptions(self) -> list[str]:
        return [
            e.text
            for e in self.driver.find_elements(By.CSS_SELECTOR, '[data-testid="stException"]')
        ]

    def errors(self) -> list[str]:
        return [
            e.text
            for e in self.driver.find_elements(
                By.CSS_SELECTOR, '[data-testid="stAlertContentError"]'
            )
        ]

    def assert_clean(self) -> None:
        """No Python exception block and no error box on the page."""
        assert not self.exceptions(), self.exceptions()
        assert not self.errors(), self.errors()

    def screenshot(self, name: str) -> Path:
        """The whole page (the window grows to the page's height for the shot)."""
        height = self.driver.execute_script(
            "const m = document.querySelector('[data-testid=\"stMain\"]');"
            "return Math.max(document.body.scrollHeight, m ? m.scrollHeight : 0);"
        )
        # From the top, as a reader sees the page (a click may have scrolled it).
        self.driver.execute_script(
            "document.querySelectorAll('*').forEach(e => { if (e.scrollTop) e.scrollTop = 0; });"
            "window.scrollTo(0, 0);"
        )
        size = self.driver.get_window_size()
        self.driver.set_window_size(size["width"], max(int(height) + 40, 800))
        path = self.screenshots / f"{name}.png"
        try:
            self.driver.save_screenshot(str(path))
        finally:
            self.driver.set_window_size(size["width"], size["height"])
        return path
