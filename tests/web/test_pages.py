"""The web page in a real browser: Debian's headless chromium driven by selenium, against a real
``streamvision serve`` (a subprocess on the session's Ray) over frames of vtest.avi that a real
Kafka pipeline ingests through the embedded broker while the live page watches.

Screenshots of every page go to ``out/screenshots/`` (CI artifacts); look at them.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable

import httpx
import pytest
from kafka import KafkaProducer
from selenium import webdriver
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys

import streamvision
from operators.kafka import wire
from tests.cluster.test_service import PER_CAMERA, _flow, _free_port, _produce, images  # noqa: F401 - a fixture

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
SHOTS = REPO / "out" / "screenshots"
TOPIC = "web"
CAMERAS = ("cam-a", "cam-b")
FRAMES = len(CAMERAS) * PER_CAMERA


def _wait(what: str, check: Callable[[], Any], timeout: float = 60.0, every: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = check()
        except Exception:  # noqa: BLE001 - an element not there yet, a page still loading
            value = None
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutException(f"waited {timeout:.0f} s for {what}")
        time.sleep(every)


@pytest.fixture(scope="module")
def site(ray_cluster, broker, tmp_path_factory):
    """``streamvision serve`` on a new collection, joined to the session's Ray, knowing the broker."""
    data = tmp_path_factory.mktemp("web") / "cams"
    port = _free_port()
    log = data.parent / "serve.log"
    address = ray_cluster.get_runtime_context().gcs_address
    with open(log, "w") as err:
        proc = subprocess.Popen([sys.executable, "-m", "streamvision.cli", "serve", "--data", str(data), "--port",
                                 str(port), "--address", address, "--bootstrap-servers", broker.bootstrap_servers],
                                stdout=err, stderr=subprocess.STDOUT, cwd=REPO)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait("the service", lambda: (data / "service.json").exists() and proc.poll() is None
              and httpx.get(f"{url}/v1/health").status_code == 200, timeout=180, every=0.5)
        _wait("the printed page URL", lambda: f"web page: {url}/" in log.read_text(), timeout=10)
        yield url, data
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()


def open_browser() -> Any:
    """Headless chromium (Debian's, through its chromedriver) laying pages out at 1280x800."""
    chromium, driver_path = shutil.which("chromium"), shutil.which("chromedriver")
    assert chromium and driver_path, "chromium and chromedriver are missing: run scripts/setup.sh (apt-get install)"
    options = Options()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--window-size=1280,800",
                "--hide-scrollbars", "--force-device-scale-factor=1"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    _viewport(driver, 1280, 800)
    SHOTS.mkdir(parents=True, exist_ok=True)
    return driver


@pytest.fixture(scope="module")
def browser():
    """Headless chromium at 1280x800."""
    driver = open_browser()
    yield driver
    driver.quit()


def _viewport(driver: Any, width: int, height: int) -> None:
    """Lay the page out in exactly ``width`` x ``height`` CSS pixels (what the screenshots show)."""
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                           {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False})


def _full_page_screenshot(driver: Any, path: Path) -> None:
    """The whole page (up to 1600 px tall) at 1280 wide."""
    height = driver.execute_script("return document.documentElement.scrollHeight")
    _viewport(driver, 1280, min(int(height), 1600))
    try:
        driver.save_screenshot(str(path))
    finally:
        _viewport(driver, 1280, 800)


class _Pipeline:
    """The Kafka frames of two cameras (and one poison message), ingested once by a real pipeline."""

    def __init__(self, broker: Any, images: list, data: Path) -> None:
        self.broker, self.images, self.data = broker, images, data
        self.thread: threading.Thread | None = None
        self.errors: list[BaseException] = []

    def start(self) -> threading.Thread:
        if self.thread is None:
            _produce(self.broker, TOPIC, self.images, CAMERAS)
            good = wire.encode_image(self.images[0], camera="cam-b", ts=1.0, frame_no=999, quality=80)
            poison = [(k, b"1e20" if k == wire.H_TS else v) for k, v in good.headers]  # a capture time past year 3000
            producer = KafkaProducer(bootstrap_servers=self.broker.bootstrap_servers, max_request_size=16 << 20)
            producer.send(TOPIC, key=b"cam-b", value=good.value, headers=poison).get(timeout=30)
            producer.close()
            self.thread = threading.Thread(target=self._run, daemon=True)
            self.thread.start()
        return self.thread

    def _run(self) -> None:
        try:
            streamvision.run(_flow(self.broker, TOPIC, self.data, "web"))
        except BaseException as exc:  # noqa: BLE001 - reported by wait()
            self.errors.append(exc)

    def wait(self) -> None:
        self.start().join(timeout=300)
        assert not self.thread.is_alive() and not self.errors, self.errors


@pytest.fixture(scope="module")
def pipeline(site, broker, images):
    return _Pipeline(broker, images, site[1])


@pytest.fixture(scope="module")
def ingested(pipeline):
    pipeline.wait()
    return pipeline


def _text(browser, css: str) -> str:
    return browser.find_element(By.CSS_SELECTOR, css).text


def _sql(url: str, sql: str) -> list[list[Any]]:
    response = httpx.post(f"{url}/v1/sql", json={"sql": sql}, timeout=60)
    assert response.status_code == 200, response.text
    return response.json()["rows"]


def test_the_live_page_counts_up_while_a_kafka_pipeline_runs(site, browser, pipeline):
    url, _ = site
    browser.get(f"{url}/#/live")
    _wait("the empty live page", lambda: "Nothing ingested yet" in _text(browser, "#cameras"))
    assert _text(browser, "#live-total") == "0"
    thread = pipeline.start()
    seen_while_running = []
    while thread.is_alive():
        seen_while_running.append(int(_text(browser, "#live-total")))
        time.sleep(0.3)
    pipeline.wait()
    assert seen_while_running == sorted(seen_while_running)
    assert any(0 < n for n in seen_while_running), seen_while_running  # it rose while the pipeline ran
    _wait("every frame counted", lambda: _text(browser, "#live-total") == str(FRAMES), timeout=30)
    cards = _wait("both cameras", lambda: len(browser.find_elements(By.CSS_SELECTOR, "#cameras [data-camera]")) == 2)
    assert cards
    counts = {c.get_attribute("data-camera"): c.find_element(By.CSS_SELECTOR, ".count").text
              for c in browser.find_elements(By.CSS_SELECTOR, "#cameras [data-camera]")}
    assert counts == {cam: str(PER_CAMERA) for cam in CAMERAS}
    _wait("the lag caught up", lambda: {e.text for e in browser.find_elements(By.CSS_SELECTOR, "#cameras .lag")} == {"0"})
    letters = _wait("the dead letter", lambda: _text(browser, "#dead-letters") if _text(browser, "#dead-letter-count") == "1" else "")
    assert "bad-header" in letters and "cam-b" in letters
    _wait("the latest frames", lambda: all(browser.execute_script("return arguments[0].naturalWidth", i) == 768
                                           for i in browser.find_elements(By.CSS_SELECTOR, "#cameras img")) and
          len(browser.find_elements(By.CSS_SELECTOR, "#cameras img")) == 2)
    _full_page_screenshot(browser, SHOTS / "live.png")


def _patch_of(url: str, camera: str, frame_no: int) -> int:
    rows = _sql(url, f"SELECT patch_id FROM patches WHERE camera = '{camera}' AND frame_no = {frame_no}")
    assert len(rows) == 1, rows
    return int(rows[0][0])


def test_an_uploaded_frame_comes_first_in_the_grid(site, browser, ingested, tmp_path):
    url, _ = site
    pid = _patch_of(url, "cam-b", 12)
    query = tmp_path / "query-frame.png"  # the frame's stored pixels, as a user would save them
    query.write_bytes(httpx.get(f"{url}/v1/patches/{pid}/pixels").content)
    browser.get(f"{url}/#/search")
    _wait("the newest patches", lambda: browser.find_elements(By.CSS_SELECTOR, "#results li.card"))
    browser.find_element(By.ID, "file").send_keys(str(query))
    _wait("the results for the upload", lambda: "query-frame.png" in _text(browser, ".summary"))
    first = browser.find_element(By.CSS_SELECTOR, "#results li.card")
    assert first.get_attribute("data-patch-id") == str(pid)
    assert float(first.find_element(By.CSS_SELECTOR, ".score").text.split()[-1]) > 0.9999
    assert len(browser.find_elements(By.CSS_SELECTOR, "#results li.card")) == 24
    count = _wait("the threshold count", lambda: _text(browser, "#threshold-count").removesuffix(" patches").isdigit()
                  and int(_text(browser, "#threshold-count").split()[0]))
    assert 1 <= count <= FRAMES
    _wait("the crops", lambda: all(browser.execute_script("return arguments[0].naturalWidth", i) > 0
                                   for i in browser.find_elements(By.CSS_SELECTOR, "#results img")[:12]))
    browser.save_screenshot(str(SHOTS / "search.png"))


def test_a_patch_page_shows_its_frame_and_kafka_offset(site, browser, ingested):
    url, _ = site
    pid = _patch_of(url, "cam-a", 7)
    frame = httpx.get(f"{url}/v1/lineage/{pid}").json()["chain"][-1]["frame"]
    browser.get(f"{url}/#/patch/{pid}")
    image = _wait("the frame image", lambda: browser.find_element(By.ID, "frame-image"))
    _wait("the frame's pixels", lambda: browser.execute_script("return arguments[0].naturalWidth", image) == 768)
    lineage = _text(browser, "#lineage")
    assert f"{frame['topic']}/{frame['partition']}@{frame['offset']}" in _text(browser, "#frame-source")
    assert browser.find_element(By.CSS_SELECTOR, '#lineage dd[data-field="offset"]').text == str(frame["offset"])
    assert "frame-file" in lineage  # where its pixels came back from
    _full_page_screenshot(browser, SHOTS / "patch.png")
    _viewport(browser, 420, 900)  # a narrow window: one column
    try:
        time.sleep(0.3)
        browser.save_screenshot(str(SHOTS / "patch-narrow.png"))
        crop, frame_box = (browser.find_element(By.CSS_SELECTOR, s).rect for s in (".crop", "#frame-image"))
        assert frame_box["y"] >= crop["y"] + crop["height"] - 1  # stacked, not squeezed side by side
    finally:
        _viewport(browser, 1280, 800)


def test_an_sql_count_reads_the_number(site, browser, ingested):
    url, _ = site
    browser.get(f"{url}/#/sql")
    box = _wait("the query box", lambda: browser.find_element(By.ID, "sql"))
    box.clear()
    box.send_keys("SELECT count(*) AS n FROM patches WHERE camera = 'cam-a'")
    box.send_keys(Keys.CONTROL, Keys.ENTER)  # the keyboard runs it
    _wait("the count", lambda: _text(browser, "#sql-table td") == str(PER_CAMERA))
    box.clear()
    box.send_keys("SELECT patch_id, camera, frame_no, ts FROM patches ORDER BY ts, camera LIMIT 8")
    browser.find_element(By.ID, "run-sql").click()
    _wait("linked patch ids", lambda: len(browser.find_elements(By.CSS_SELECTOR, '#sql-table a[href^="#/patch/"]')) == 8)
    _wait("their crops", lambda: all(browser.execute_script("return arguments[0].naturalWidth", i) > 0
                                     for i in browser.find_elements(By.CSS_SELECTOR, "#sql-table img")))
    browser.save_screenshot(str(SHOTS / "sql.png"))
    box.clear()
    box.send_keys("SELECT colour FROM patches")
    browser.find_element(By.ID, "run-sql").click()
    error = _wait("the error in words", lambda: _text(browser, "#error"))
    assert "colour" in error
