"""A real browser for the dashboard tests: headless Chromium driven through Selenium.

- `browser`: a fixture giving a `Browser` (Debian's `/usr/bin/chromium` through
  `/usr/bin/chromedriver`; no driver is downloaded). Under `CI=true` a missing browser or
  driver fails the test: a dashboard test that silently skips in CI tests nothing. Elsewhere
  the test is skipped with the reason.
- `Browser.login(url, token)`: through the login page, as a person would.
- `Browser.tile(name)`, `table(name)`, `chart(name)`: the figures the page shows, read from
  the `data-*` attributes it puts on tiles, table cells and charts.
- `Browser.wait_for(probe, ...)`: polls `probe` until it returns something truthy, with a
  timeout and the last value seen in the error: waiting, never sleeping, for a value.
- `Browser.screenshot(path)`: the whole page, for the docs.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

CHROMIUM = os.environ.get("BASTION_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("BASTION_CHROMEDRIVER", "/usr/bin/chromedriver")

T = TypeVar("T")


def _missing() -> str | None:
    """Why no browser can be started here, or None."""
    for path, package in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not (Path(path).exists() or shutil.which(path)):
            return f"{path} not found (install the Debian package {package})"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e .[dev])"
    return None


def require_browser() -> None:
    """Fail under CI, skip elsewhere, when the browser cannot run."""
    reason = _missing()
    if reason is None:
        return
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"the dashboard tests need a browser in CI: {reason}")
    pytest.skip(reason)


class Browser:
    def __init__(self, driver: Any) -> None:
        self.driver = driver

    # ------------------------------------------------------------------ waiting
    def wait_for(
        self,
        probe: Callable[[], T],
        timeout: float = 15.0,
        message: str = "condition",
        interval: float = 0.1,
    ) -> T:
        """`probe()` until it returns something truthy (returned); an error after `timeout`
        seconds naming `message` and the last value or exception seen."""
        deadline = time.monotonic() + timeout
        last: Any = None
        while True:
            try:
                value = probe()
                if value:
                    return value
                last = value
            except Exception as error:  # the page may be between two renders
                last = error
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {message}; last seen: {last!r}")
            time.sleep(interval)

    # ------------------------------------------------------------------ navigation
    def open(self, url: str) -> None:
        self.driver.get(url)

    def js(self, script: str, *args: Any) -> Any:
        return self.driver.execute_script(script, *args)

    def login(self, url: str, token: str, timeout: float = 15.0) -> None:
        """Open the dashboard at `url`, be sent to the login page, log in with `token`, and
        wait until the dashboard has drawn its first figures."""
        from selenium.webdriver.common.by import By
        from selenium.webdriver.common.keys import Keys

        self.open(url.rstrip("/") + "/")
        field = self.wait_for(
            lambda: self.driver.find_elements(By.CSS_SELECTOR, "input[type=password]"),
            timeout,
            "the login page's token field",
        )[0]
        field.send_keys(token)
        buttons = self.driver.find_elements(By.CSS_SELECTOR, "form button, form input[type=submit]")
        if buttons:
            buttons[0].click()
        else:
            field.send_keys(Keys.ENTER)
        self.wait_ready(timeout)

    def wait_ready(self, timeout: float = 15.0) -> None:
        """The dashboard page is loaded and its statistics request has been answered."""
        self.wait_for(
            lambda: self.js(
                "return document.body && document.body.dataset.stats"
                " && document.body.dataset.stats !== 'loading' && document.querySelector"
                "('[data-tile]') !== null"
            ),
            timeout,
            "the dashboard to load",
        )

    def select_window(self, window: str, timeout: float = 15.0) -> None:
        """Click a window button ("live", "5m", "1h", …) and wait for its figures."""
        before = int(self.js("return Number(document.body.dataset.renders || 0)"))
        self.driver.find_element("css selector", f'[data-window="{window}"]').click()
        self.wait_for(
            lambda: (
                self.js("return document.body.dataset.window") == window
                and self.js("return document.body.dataset.stats") != "loading"
                and int(self.js("return Number(document.body.dataset.renders || 0)")) > before
            ),
            timeout,
            f"the {window} window",
        )

    # ------------------------------------------------------------------ reading the page
    def tile(self, name: str) -> float | None:
        """The raw figure of a tile (`data-value`), None while it shows no figure."""
        value = self.js(
            'const t = document.querySelector(`[data-tile="${arguments[0]}"]`);'
            "if (!t) throw new Error('no tile ' + arguments[0]);"
            "return t.dataset.value === undefined ? null : t.dataset.value;",
            name,
        )
        return None if value is None else float(value)

    def tile_text(self, name: str) -> str:
        return str(
            self.js(
                'return document.querySelector(`[data-tile="${arguments[0]}"] .value`)'
                ".textContent;",
                name,
            )
        )

    def wait_tile(
        self, name: str, predicate: Callable[[float], bool], timeout: float = 15.0
    ) -> float:
        """Poll a tile until its figure satisfies `predicate`; the figure."""

        def probe() -> tuple[float] | None:
            value = self.tile(name)
            return (value,) if value is not None and predicate(value) else None

        return self.wait_for(probe, timeout, f"tile {name}")[0]

    def table(self, name: str) -> list[dict[str, Any]] | None:
        """The rows of the table `data-table=name`: {"_key": data-key, col: number (from
        data-value) or text}; None when the section shows its empty state instead."""
        rows = self.js(
            'const t = document.querySelector(`[data-table="${arguments[0]}"]`);'
            "if (!t) return null;"
            "return [...t.tBodies[0].rows].map(r => {"
            "  const o = {_key: r.dataset.key};"
            "  for (const c of r.cells) o[c.dataset.col] = c.dataset.value !== undefined"
            "    ? Number(c.dataset.value) : c.textContent;"
            "  return o; });",
            name,
        )
        return None if rows is None else list(rows)

    def row(self, table: str, key: str) -> dict[str, Any] | None:
        for row in self.table(table) or []:
            if row["_key"] == key:
                return row
        return None

    def text_of(self, selector: str) -> str:
        return str(self.js("return document.querySelector(arguments[0]).textContent", selector))

    def chart(self, name: str) -> dict[str, Any]:
        """A chart's points, the sum of all its values, and each series' sum."""
        return dict(
            self.js(
                'const f = document.querySelector(`[data-chart="${arguments[0]}"]`);'
                "const series = {};"
                "for (const p of f.querySelectorAll('path[data-series]'))"
                "  series[p.dataset.series] = Number(p.dataset.sum);"
                "return {points: Number(f.dataset.points || 0), total: Number(f.dataset.total"
                " || 0), series, empty: f.querySelector('.empty')?.textContent ?? null};",
                name,
            )
        )

    def console_errors(self) -> list[str]:
        """Errors the page logged since the last call (CSP violations among them)."""
        return [
            entry["message"]
            for entry in self.driver.get_log("browser")
            if entry.get("level") == "SEVERE"
        ]

    def screenshot(self, path: Path, width: int = 1400, height: int | None = None) -> Path:
        """The page as a PNG: the whole page (the window stretched to its height), or its
        top `height` pixels."""
        if height is None:
            height = int(self.js("return document.documentElement.scrollHeight"))
        self.driver.set_window_size(width, min(max(height, 600), 6000))
        path.parent.mkdir(parents=True, exist_ok=True)
        self.driver.save_screenshot(str(path))
        return path


def start_browser(width: int = 1400, height: int = 1000, dark: bool = False) -> Browser:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--no-first-run",
        "--disable-extensions",
        f"--window-size={width},{height}",
        "--force-device-scale-factor=1",
        "--lang=en-US",
    ):
        options.add_argument(argument)
    if dark:
        options.add_argument("--force-dark-mode")
        options.add_argument("--blink-settings=preferredColorScheme=0")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    return Browser(driver)


@pytest.fixture
def browser() -> Iterator[Browser]:
    require_browser()
    b = start_browser()
    try:
        yield b
    finally:
        b.driver.quit()
