"""The studio page in a real headless Chromium: enter a key, submit a prompt, watch the
progress bar move, and play the finished video from the gallery.

Needs Debian's ``chromium`` and ``chromium-driver`` (``install.sh test`` installs them) and
``selenium``. Without them the test fails when ``CI`` is set, and is skipped otherwise.
"""
from __future__ import annotations

import os
import shutil
import threading
import time

import pytest

from test_serve_api import served
from test_serve_queue import FakeGenerator, fast_cfg
from worldreel.serve.app import create_app
from worldreel.serve.auth import KeyRing
from worldreel.serve.runner import BackgroundServer
from worldreel.serve.worker import Worker

KEY = "studio-key-0123456789abcdef"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--window-size=1200,900", "--autoplay-policy=no-user-gesture-required"]


def _missing(what: str):
    message = (f"the studio browser test needs {what}: apt-get install -y chromium chromium-driver, "
               "pip install selenium (./install.sh test does both)")
    if os.environ.get("CI", "").lower() not in ("", "0", "false"):
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture()
def browser(tmp_path):
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    driver_path = shutil.which("chromedriver")
    if not binary or not driver_path:
        _missing("Chromium and chromedriver")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        _missing("the selenium package")
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for flag in FLAGS + [f"--user-data-dir={tmp_path / 'profile'}"]:
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
    driver.set_script_timeout(20)
    yield driver
    driver.quit()


@pytest.fixture()
def studio(tmp_path):
    cfg = fast_cfg()
    app = create_app(tmp_path / "data", served(), keys=KeyRing([KEY]), cfg=cfg)
    generator = FakeGenerator(steps=12, delay=0.25)  # ~3 s, so the page sees the progress move
    worker = Worker(tmp_path / "data", models={"world-tiny": "world-tiny"}, factory=lambda s: generator, cfg=cfg)
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    with BackgroundServer(app) as server:
        yield server.url
    worker.stop.set()
    thread.join(timeout=20)


def _wait(driver, script: str, timeout: float = 20.0, what: str = ""):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = driver.execute_script(script)
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what or script}")


def test_studio_generates_and_plays_a_video(browser, studio, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import Select

    browser.get(studio + "/")
    _wait(browser, "return !document.getElementById('key-box').hidden", what="the key box (keys are on)")
    browser.find_element(By.ID, "api-key").send_keys(KEY, Keys.TAB)  # "change" stores it and loads the page
    _wait(browser, "return document.querySelectorAll('#model option').length > 0", what="the model menu")
    assert browser.find_element(By.ID, "model").get_attribute("value") == "world-tiny"
    browser.find_element(By.ID, "prompt").send_keys("a red ball falls and bounces on the floor")
    browser.find_element(By.ID, "size").send_keys("32x32")
    Select(browser.find_element(By.ID, "seconds")).select_by_value("1")
    browser.find_element(By.ID, "seed").send_keys("3")
    browser.find_element(By.ID, "submit").click()

    # The progress bar moves while the worker runs.
    _wait(browser, "return !document.getElementById('job').hidden", what="the job panel")
    seen = set()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        seen.add(int(browser.execute_script("return document.getElementById('progress').value")))
        if browser.find_element(By.ID, "job-status").text == "completed":
            break
        time.sleep(0.05)
    assert browser.find_element(By.ID, "job-status").text == "completed", browser.find_element(By.ID, "message").text
    assert any(0 < p < 100 for p in seen), f"no intermediate progress seen: {sorted(seen)}"
    assert browser.execute_script("return document.getElementById('progress').value") == 100

    # The gallery card's player gets the MP4 (as a blob: URL, fetched with the key) and plays it.
    card = "document.querySelector('#gallery .card[data-status=completed]')"
    _wait(browser, f"const c = {card}; return c && c.querySelector('video').src.startsWith('blob:')",
          what="the video's src")
    state = browser.execute_async_script(f"""
        const done = arguments[arguments.length - 1];
        const v = {card}.querySelector('video');
        const report = () => done({{error: v.error && v.error.code, ready: v.readyState, duration: v.duration,
                                    width: v.videoWidth, time: v.currentTime}});
        const play = () => v.play().then(() => setTimeout(report, 600)).catch((e) => done({{error: String(e)}}));
        if (v.readyState >= 2) play(); else {{ v.addEventListener('canplay', play, {{once: true}});
                                             v.addEventListener('error', report, {{once: true}}); }}
    """)
    assert state["error"] is None, f"the browser could not play the video: {state}"
    assert state["ready"] >= 2 and state["width"] == 32 and abs(state["duration"] - 1.125) < 0.2, state
    assert state["time"] > 0, f"playback did not advance: {state}"
    text = browser.execute_script(f"return {card}.innerText")
    assert "model saw: rewritten: a red ball falls" in text and "seed 3" in text
    download = browser.execute_script(f"return {card}.querySelector('a.download').download")
    assert download.endswith(".mp4")
    browser.save_screenshot(str(tmp_path / "studio.png"))
    assert (tmp_path / "studio.png").stat().st_size > 10_000
