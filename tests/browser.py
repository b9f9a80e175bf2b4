"""Open the documentation site in a real browser (headless Chromium through Selenium) and report
what a reader would see: used by tests/test_notebooks.py (the site built from the smoke runs)
and runnable by hand on a built site: ``python tests/browser.py build/book``.

Chromium and ChromeDriver are Debian's packages (``chromium``, ``chromium-driver``; ``.ci/run``
installs them); Selenium is told where they are, so it never tries to download a browser.
"""
from __future__ import annotations

import functools
import http.server
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
CHROMEDRIVER = shutil.which("chromedriver")
# flags for a closed network: no background fetches, no sandbox (CI runs as root)
FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
         "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--window-size=1280,1600"]

# what the page shows once its scripts ran: MathJax's typeset elements, raw TeX left in the text
# (outside code), and the images that failed to load
PAGE_STATE = """
const main = document.querySelector('main') || document.body;
const copy = main.cloneNode(true);
copy.querySelectorAll('pre, code, script, mjx-container, .MathJax').forEach(e => e.remove());
return {
  typeset: document.querySelectorAll('mjx-container').length,
  text: copy.textContent,
  images: Array.from(document.images).map(i => [i.getAttribute('src'), i.complete && i.naturalWidth > 0]),
  mathjax_src: Array.from(document.scripts).map(s => s.src).filter(s => s.includes('mathjax')),
};
"""


def missing() -> str | None:
    """Why no browser test can run here, or None."""
    if not CHROMIUM or not CHROMEDRIVER:
        return "no headless Chromium and ChromeDriver here (Debian: apt-get install chromium chromium-driver)"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e '.[dev]')"
    return None


class Site:
    """The built site served by ``http.server`` on a free local port (as a reader would with
    ``python -m http.server``), and one headless Chromium that reads it."""

    def __init__(self, root):
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service

        self.root = Path(root)
        handler = functools.partial(_QuietHandler, directory=str(self.root))
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}/"
        opts = webdriver.ChromeOptions()
        opts.binary_location = CHROMIUM
        self._profile = tempfile.mkdtemp(prefix="chromium-")
        for f in FLAGS + [f"--user-data-dir={self._profile}"]:
            opts.add_argument(f)
        self.driver = webdriver.Chrome(options=opts, service=Service(executable_path=CHROMEDRIVER))
        self.driver.set_page_load_timeout(60)

    def close(self):
        self.driver.quit()
        self.server.shutdown()
        shutil.rmtree(self._profile, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def page(self, rel: str, file: bool = False, wait: float = 30.0) -> dict:
        """Load ``rel`` (over http, or from ``file://`` with ``file=True``), wait until MathJax has
        finished (or ``wait`` seconds), and return :data:`PAGE_STATE`."""
        url = (self.root.resolve() / rel).as_uri() if file else self.base + rel
        self.driver.get(url)
        end = time.time() + wait
        while time.time() < end:
            done = self.driver.execute_script(
                "return !window.MathJax || !MathJax.startup || !MathJax.startup.promise ? 'none' : "
                "(window.__typeset_done ? 'done' : (MathJax.startup.promise.then(() => window.__typeset_done = true), "
                "'waiting'))")
            if done in ("none", "done"):
                break
            time.sleep(0.2)
        time.sleep(0.3)
        return self.driver.execute_script(PAGE_STATE)

    def search(self, query: str, file: bool = False, wait: float = 30.0) -> list[str]:
        """The hrefs of the results Sphinx's search page lists for ``query``."""
        from urllib.parse import quote_plus

        rel = f"search.html?q={quote_plus(query)}"
        url = (self.root.resolve() / "search.html").as_uri() + rel[len("search.html"):] if file else self.base + rel
        self.driver.get(url)
        end, hrefs = time.time() + wait, []
        while time.time() < end:
            hrefs = self.driver.execute_script(
                "return Array.from(document.querySelectorAll('#search-results li a, ul.search li a'))"
                ".map(a => a.getAttribute('href'))")
            status = self.driver.execute_script(
                "const s = document.querySelector('#search-results p.search-summary, .search-summary');"
                "return s ? s.textContent : ''")
            if hrefs and status:
                break
            time.sleep(0.3)
        return hrefs


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def main(argv=None):
    root = Path((argv or sys.argv[1:] or ["build/book"])[0])
    why = missing()
    if why:
        print(why)
        return 2
    with Site(root) as site:
        for rel in ("notebooks/03_greedy_initialization.html", "api/backdoor_loss.html"):
            st = site.page(rel)
            bad = [src for src, ok in st["images"] if not ok]
            print(f"{rel}: {st['typeset']} typeset formulas, {len(st['images'])} images ({len(bad)} not loaded), "
                  f"'$' left in the text: {st['text'].count('$')}")
        print("search 'Schur complement':", site.search("Schur complement")[:5])
        print("search from file://:", site.search("Schur complement", file=True)[:5])
    return 0


if __name__ == "__main__":
    sys.exit(main())
