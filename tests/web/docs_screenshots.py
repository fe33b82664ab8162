"""Make the README's screenshots of the web page (``docs/web-search.png``, ``docs/web-patch.png``).

Not a test: run by hand when the page changes (a few minutes on 2 cores)::

    flock /tmp/sv-bench.lock python3 -m tests.web.docs_screenshots --work /tmp/sv-docs

It runs ``streamvision demo`` on 40 frames of vtest.avi with the real models (NanoDet-m, so the
patch page has boxes), records a small ``streamvision train --store`` run in the same collection
(for the models page), serves it with ``streamvision serve``, and photographs the pages in
headless chromium at 1280x800 (every page into ``out/screenshots/docs-*.png``; the two for the
README are shrunk to fit in about 150 KB).
"""

from __future__ import annotations

import argparse
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
from PIL import Image
from selenium.webdriver.common.by import By

from operators.index.sharded import STORE_DIRNAME
from operators.sinks.collection_writer import read_manifest
from tests.web.test_pages import REPO, SHOTS, _free_port, _full_page_screenshot, _viewport, _wait, open_browser

CLI = [sys.executable, "-m", "streamvision.cli"]
MST = "archs: [cnn_tiny, cnn_small]\ncompile_params: {lr: [0.003, 0.01]}\nfit_params: {batch_size: [64]}\n"


def _shrink(src: Path, dst: Path, width: int = 960, limit: int = 150_000) -> None:
    image = Image.open(src).convert("RGB")
    image = image.resize((width, round(image.height * width / image.width)), Image.LANCZOS)
    for colors in (256, 128, 64):
        image.quantize(colors=colors, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(dst, optimize=True)
        if dst.stat().st_size <= limit:
            return


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/sv-docs"))
    args = parser.parse_args()
    data, run = args.work / "demo", args.work / "run"
    shutil.rmtree(run, ignore_errors=True)
    demo = subprocess.run([*CLI, "demo", "--data", str(data), "--limit", "40", "--query-frame", "20",
                           "--port", str(_free_port())], cwd=REPO)
    if not read_manifest(data).get("dim"):
        raise SystemExit(f"the demo ingested nothing (exit status {demo.returncode})")
    (args.work / "mst.yaml").write_text(MST)
    subprocess.run([*CLI, "train", "--mst", str(args.work / "mst.yaml"), "--data", "fashion-mnist:3000",
                    "--validation", "fashion-mnist-test:600", "--workers", "2", "--epochs", "3", "--out", str(run),
                    "--store", str(data / STORE_DIRNAME)], check=True, cwd=REPO)
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    serving = subprocess.Popen([*CLI, "serve", "--data", str(data), "--port", str(port)], cwd=REPO)
    try:
        _wait("the service", lambda: httpx.get(f"{url}/v1/health").status_code == 200, timeout=180, every=0.5)
        person = httpx.post(f"{url}/v1/sql", json={"sql": "SELECT patch_id FROM patches WHERE label = 'person' "
                                                          "AND frame_no = 20 ORDER BY score DESC LIMIT 1"}).json()
        pid = person["rows"][0][0]
        driver = open_browser()
        try:
            driver.get(f"{url}/#/patch/{pid}")  # search by a result: "Find similar" on a person
            _wait("the patch page", lambda: driver.find_element(By.XPATH, "//button[text()='Find similar']")).click()
            _wait("the results", lambda: f"patch {pid}" in driver.find_element(By.CSS_SELECTOR, ".summary").text)
            _wait("the count", lambda: driver.find_element(By.ID, "threshold-count").text.endswith("patches"))
            time.sleep(2)  # the crops
            driver.save_screenshot(str(SHOTS / "docs-search.png"))
            driver.get(f"{url}/#/patch/{pid}")
            _wait("the frame", lambda: driver.execute_script(
                "return document.getElementById('frame-image').naturalWidth") == 768)
            time.sleep(1)
            _full_page_screenshot(driver, SHOTS / "docs-patch.png")
            for page in ("models", "live", "sql"):
                driver.get(f"{url}/#/{page}")
                time.sleep(4)
                _full_page_screenshot(driver, SHOTS / f"docs-{page}.png")
            _viewport(driver, 1280, 800)
        finally:
            driver.quit()
    finally:
        serving.send_signal(signal.SIGTERM)
        serving.wait(timeout=60)
    docs = REPO / "docs"
    docs.mkdir(exist_ok=True)
    _shrink(SHOTS / "docs-search.png", docs / "web-search.png")
    _shrink(SHOTS / "docs-patch.png", docs / "web-patch.png")
    for name in ("web-search.png", "web-patch.png"):
        print(name, (docs / name).stat().st_size, "bytes")


if __name__ == "__main__":
    main()
