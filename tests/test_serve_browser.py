"""The page of ``alexnet serve`` in a real browser: headless Chromium (Debian's ``chromium`` and
``chromium-driver``, driven by Selenium; nothing is downloaded) against a server on 127.0.0.1.

The test uploads an image of the built-in data and checks that the page shows the top class the API
gives, k neighbours in fc7 space and k in pixel space (their thumbnails loaded), class names with
markup in them as text, a clear message for a refused upload, and that a second upload sent while
the first is in flight wins. On the CPU.

Run as a script it takes the README's screenshot of the page after an upload::

    python tests/test_serve_browser.py --ckpt alexnet-demo/run/best.ckpt --data alexnet-demo/prepared \\
        --image alexnet-demo/synth/val/star/star_00003.jpg --out docs/figures/serve.png
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

CHROMIUM = os.environ.get("ALEXNET_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("ALEXNET_CHROMEDRIVER", "/usr/bin/chromedriver")
K = 6  # the page's default number of neighbours


def _missing() -> str | None:
    """Why the browser test cannot run here, or None."""
    import importlib.util

    for mod, pkg in (("starlette", "starlette"), ("uvicorn", "uvicorn"), ("python_multipart", "python-multipart"),
                     ("selenium", "selenium"), ("httpx", "httpx")):
        if importlib.util.find_spec(mod) is None:
            return f"{pkg} is not installed (pip install -e '.[test]')"
    for path in (CHROMIUM, CHROMEDRIVER):
        if not (os.path.isfile(path) and os.access(path, os.X_OK)):
            return f"no {path} (apt-get install chromium chromium-driver)"
    return None


def browser(width: int = 1280, height: int = 1000):
    """Headless Chromium at ``CHROMIUM`` through ``CHROMEDRIVER`` (Selenium Manager stays offline)."""
    os.environ.setdefault("SE_OFFLINE", "true")
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service as DriverService

    opts = Options()
    opts.binary_location = CHROMIUM
    for a in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--disable-extensions",
              f"--window-size={width},{height}", "--force-device-scale-factor=1", "--lang=en-US"):
        opts.add_argument(a)
    return webdriver.Chrome(service=DriverService(CHROMEDRIVER), options=opts)


def _wait(driver, until, timeout: float = 30.0):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout, poll_frequency=0.05).until(lambda d: until(d))


def open_page(driver, url: str) -> None:
    driver.get(url + "/")
    _wait(driver, lambda d: d.find_element("tag name", "body").get_attribute("data-ready") == "1")


def upload(driver, image: Path, *, wait: bool = True) -> None:
    """Choose ``image`` in the page's file input; with ``wait``, until its answers (or a refusal) are shown."""
    driver.find_element("id", "file").send_keys(str(Path(image).resolve()))
    if wait:
        _wait(driver, lambda d: "busy" not in (d.find_element("tag name", "body").get_attribute("class") or "")
              and (d.find_element("id", "results").is_displayed() or d.find_element("id", "error").is_displayed()))


def shown(driver) -> dict:
    """What the page shows: top classes (centre crop, 10 patches), neighbour captions, error, query name."""
    js = """
    const texts = (sel) => Array.from(document.querySelectorAll(sel)).map((e) => e.textContent);
    const loaded = (sel) => Array.from(document.querySelectorAll(sel)).map((i) => i.complete && i.naturalWidth > 0);
    return {center: texts('#top-center .name'), tencrop: texts('#top-10crop .name'),
            fc7: texts('#neighbors-fc7 .cls'), pixels: texts('#neighbors-pixels .cls'),
            fc7_loaded: loaded('#neighbors-fc7 img'), pixels_loaded: loaded('#neighbors-pixels img'),
            markup: document.querySelectorAll('#results b, #results i, #neighbors b, #results img[src="x"]').length,
            error: document.getElementById('error').hidden ? null : document.getElementById('error').textContent,
            query: document.getElementById('query-name').textContent};
    """
    return driver.execute_script(js)


def _api_top(url: str, image: Path) -> str:
    import httpx

    r = httpx.post(f"{url}/v1/predict", files={"image": (image.name, image.read_bytes(), "image/jpeg")}, timeout=30)
    r.raise_for_status()
    return r.json()[0]["top"][0]["class"]


# ---------------------------------------------------------------- the test
@pytest.fixture(scope="module")
def marked_checkpoint(trained, tmp_path_factory):
    """The trained checkpoint with class names that hold markup, which the page must show as text."""
    import torch  # noqa: F401  (the checkpoint holds tensors)

    from alexnet.checkpoint import load_checkpoint, save_checkpoint

    path = tmp_path_factory.mktemp("serve-browser") / "marked.ckpt"
    ck = load_checkpoint(trained["ckpt"])
    ck["class_names"] = [f"<b>{c}</b> & <img src=x>" for c in ck["classes"]]
    save_checkpoint(path, ck)
    return path


@pytest.mark.slow
@pytest.mark.skipif(_missing() is not None, reason=_missing() or "")
def test_page_in_headless_chromium(trained, marked_checkpoint, tmp_path):
    from alexnet.serve import in_thread
    from alexnet.serve.service import Service

    images = [sorted((trained["src"] / "val" / c).iterdir())[0] for c in sorted(os.listdir(trained["src"] / "val"))]
    bad = tmp_path / "holiday <photo>.jpg"
    bad.write_bytes(b"this is not a JPEG at all " * 10)
    service = Service(marked_checkpoint, neighbors=trained["prep"], device="cpu")
    with in_thread(service) as url:
        driver = browser()
        try:
            open_page(driver, url)
            upload(driver, images[0])
            page = shown(driver)
            assert page["error"] is None
            assert page["center"][0] == _api_top(url, images[0])  # the very string, markup and all, as text
            assert len(page["center"]) == len(page["tencrop"]) == 4
            assert len(page["fc7"]) == K and len(page["pixels"]) == K
            _wait(driver, lambda d: all(shown(d)["fc7_loaded"] + shown(d)["pixels_loaded"]), 10)
            assert page["markup"] == 0  # no element was made from a class name
            assert page["query"] == images[0].name

            upload(driver, bad)  # refused: a clear message, the page still works
            page = shown(driver)
            assert page["error"].startswith("Refused: The upload is not an image")

            upload(driver, images[1], wait=False)  # two uploads, the second while the first is in flight:
            upload(driver, images[2])  # the second's answers are the ones shown
            _wait(driver, lambda d: shown(d)["query"] == images[2].name and shown(d)["center"])
            page = shown(driver)
            assert page["error"] is None and page["center"][0] == _api_top(url, images[2])

            driver.find_element("css selector", "[data-panel=filters-panel]").click()
            _wait(driver, lambda d: d.execute_script(
                "const i = document.getElementById('filters'); return i.complete && i.naturalWidth > 0;"), 20)
        finally:
            driver.quit()


# ---------------------------------------------------------------- the README's screenshot
def main(argv=None) -> int:
    import argparse

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    p = argparse.ArgumentParser(description="Screenshot of the alexnet serve page after an upload (headless Chromium).")
    p.add_argument("--ckpt", required=True)
    p.add_argument("--data", help="prepared data folder for the neighbour panel")
    p.add_argument("--image", required=True)
    p.add_argument("--out", default="docs/figures/serve.png")
    p.add_argument("--height", type=int, default=1060, help="window height (the page after an upload fits 1060)")
    args = p.parse_args(argv)
    why = _missing()
    if why:
        print(f"cannot take the screenshot: {why}", file=sys.stderr)
        return 2
    from alexnet.serve import in_thread
    from alexnet.serve.service import Service

    service = Service(args.ckpt, neighbors=args.data, device="cpu")
    with in_thread(service) as url:
        driver = browser(height=args.height)
        try:
            open_page(driver, url)
            upload(driver, Path(args.image))
            if args.data:
                _wait(driver, lambda d: all(shown(d)["fc7_loaded"] + shown(d)["pixels_loaded"]), 20)
            png = driver.get_screenshot_as_png()
        finally:
            driver.quit()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(args.out).with_suffix(".tmp.png")
    tmp.write_bytes(png)
    shutil.move(tmp, args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
