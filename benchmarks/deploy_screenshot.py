"""The README's picture of `mmcore serve`'s page: the demo model served on loopback, a test record's
PNG and WAV uploaded and its word typed in a headless chromium (selenium), the prediction shown.

    python benchmarks/deploy_screenshot.py --path runs/demo --out docs/deploy_page.png
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--path", default="runs/demo", help="a run directory or an export folder (default runs/demo)")
    parser.add_argument("--out", default="docs/deploy_page.png")
    parser.add_argument("--record", type=int, default=3, help="which test record of the demo data (default 3)")
    args = parser.parse_args()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ready
    from selenium.webdriver.support.ui import WebDriverWait

    import mmcore
    from mmcore.engine.datasets import load_datasets
    from mmcore.engine.rundir import RunDir

    run = Path(args.path)
    if (run / "manifest.json").is_file():
        run = Path(json.loads((run / "manifest.json").read_text())["source"]["run"])
    test = load_datasets(RunDir.open(run).read_config(), mmcore.get_plugin_manager(), splits=("test",))["test"]
    record = next(test[i]["inputs"] for i in range(args.record, len(test)) if test[i]["inputs"].get("text"))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "mmcore", "serve", args.path, "--port", str(port), "--log-level", "warning"])
    profile = tempfile.mkdtemp(prefix="mmcore-chromium-")
    try:
        for _ in range(600):
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.5)
        options = webdriver.ChromeOptions()
        options.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
        for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                     "--disable-background-networking", "--disable-component-update", "--disable-sync",
                     "--window-size=1180,760", "--hide-scrollbars", f"--user-data-dir={profile}"):
            options.add_argument(flag)
        driver = webdriver.Chrome(service=Service(shutil.which("chromedriver") or "/usr/bin/chromedriver"), options=options)
        try:
            driver.get(f"http://127.0.0.1:{port}/")
            for slot, value in record.items():
                if value is None:
                    continue
                element = driver.find_element(By.ID, slot)
                element.send_keys(str(Path(value).resolve()) if element.get_attribute("type") == "file" else value)
            driver.find_element(By.ID, "submit").click()
            shown = WebDriverWait(driver, 120).until(ready.presence_of_element_located((By.ID, "predicted-class")))
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            driver.save_screenshot(args.out)
            print(f"predicted {shown.text!r} for {record}; screenshot -> {args.out}")
        finally:
            driver.quit()
    finally:
        server.terminate()
        server.wait(30)
        shutil.rmtree(profile, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
