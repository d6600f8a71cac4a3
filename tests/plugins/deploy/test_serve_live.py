"""`mmcore serve` on a real socket (127.0.0.1): the page in a real browser (headless Debian chromium
driven by selenium: upload a PNG and a WAV, type text, submit, read the class; a fit run's answer's warnings
and a record without input), a bounded load test
(N clients x M requests: no error, none lost), and the command itself in a subprocess."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from deploy_helpers import CLASSES, png_bytes, wav_bytes

from mmcore_plugins.deploy.backends import open_backend
from mmcore_plugins.deploy.serve import create_app

CHROMIUM, CHROMEDRIVER = shutil.which("chromium") or "/usr/bin/chromium", shutil.which("chromedriver") or "/usr/bin/chromedriver"


@pytest.fixture(scope="module")
def server(small_run):
    """The small run served by uvicorn in a thread on 127.0.0.1 (a free port); stopped after the module."""
    yield from _serving(small_run)


@pytest.fixture(scope="module")
def fit_server(cp1252_fit_run):
    """The shared cp1252 `mmcore fit` run (tests/plugins/conftest.py: categories 'Kunde', 'Stadt', a number
    'Betrag') served as ``server`` serves the small run."""
    yield from _serving(cp1252_fit_run)


def _serving(folder):
    import uvicorn

    app = create_app(open_backend(folder))
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started, "uvicorn did not start"
    port = server.servers[0].sockets[0].getsockname()[1]
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(30)


@pytest.mark.slow
def test_load_many_clients_no_error_none_lost(server, tmp_path):
    clients, each = 8, 10
    upload = {"image": ("a.png", png_bytes("cross", 1), "image/png"), "audio": ("a.wav", wav_bytes("cross", 1), "audio/wav")}
    before = httpx.get(f"{server}/healthz").json()

    def client(i: int) -> list[tuple[int, str]]:
        out = []
        with httpx.Client(base_url=server, timeout=60) as http:
            for j in range(each):
                if (i + j) % 2:
                    answer = http.post("/predict", json={"records": [{"text": ["round ring", "plus sign", "bar line"][j % 3]}]})
                else:
                    answer = http.post("/predict", files=upload, data={"text": "plus sign"})
                out.append((answer.status_code, answer.json()["predictions"][0]["prediction"] if answer.status_code == 200 else answer.text))
        return out

    with ThreadPoolExecutor(clients) as pool:
        results = [r for rs in pool.map(client, range(clients)) for r in rs]
    assert len(results) == clients * each and all(code == 200 for code, _ in results), [r for r in results if r[0] != 200][:3]
    assert all(prediction in CLASSES for _, prediction in results)
    after = httpx.get(f"{server}/healthz").json()
    assert after["predicted"] - before["predicted"] == clients * each and after["rejected"] == before["rejected"]
    assert after["queued"] == 0


def _browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    if not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)):
        pytest.skip("Debian's chromium and chromium-driver are not installed (.ci/setup installs them)")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--window-size=1200,800", "--disable-dev-shm-usage"):
        options.add_argument(flag)
    import tempfile

    profile = tempfile.mkdtemp(prefix="mmcore-chromium-")
    options.add_argument(f"--user-data-dir={profile}")
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options), profile


@pytest.mark.slow
def test_the_page_in_a_real_browser_uploads_types_submits_and_shows_the_class(server, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ready
    from selenium.webdriver.support.ui import WebDriverWait

    (tmp_path / "digit.png").write_bytes(png_bytes("stripe", 11))
    (tmp_path / "spoken.wav").write_bytes(wav_bytes("stripe", 11))
    expected = httpx.post(f"{server}/predict", files={"image": ("d.png", png_bytes("stripe", 11), "image/png"),
                                                      "audio": ("s.wav", wav_bytes("stripe", 11), "audio/wav")},
                          data={"text": "bar line"}).json()["predictions"][0]
    driver, profile = _browser()
    try:
        driver.get(f"{server}/")
        assert "mmcore" in driver.title
        driver.find_element(By.ID, "image").send_keys(str(tmp_path / "digit.png"))
        driver.find_element(By.ID, "audio").send_keys(str(tmp_path / "spoken.wav"))
        driver.find_element(By.ID, "text").send_keys("bar line")
        driver.find_element(By.ID, "submit").click()
        shown = WebDriverWait(driver, 60).until(ready.presence_of_element_located((By.ID, "predicted-class")))
        assert shown.text == expected["prediction"]
        assert driver.find_element(By.ID, "modalities").text == "from audio, image, text"
        bars = driver.find_elements(By.CSS_SELECTOR, "#result .bar")
        assert len(bars) == len(CLASSES) and expected["prediction"] in bars[0].text, "the top bar is the predicted class"
        driver.save_screenshot(str(tmp_path / "page.png"))
        # A bad value is shown as the server's error naming the field, and the page keeps working.
        driver.find_element(By.ID, "profile.size").send_keys("12")
        driver.find_element(By.ID, "image").send_keys(str(tmp_path / "spoken.wav"))  # not an image
        driver.find_element(By.ID, "submit").click()
        error = WebDriverWait(driver, 60).until(ready.presence_of_element_located((By.ID, "error")))
        assert error.text.startswith("image:")
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)
    assert (tmp_path / "page.png").stat().st_size > 10_000


@pytest.mark.slow
def test_the_page_shows_an_answers_warnings_and_a_null_prediction_with_its_note(fit_server, tmp_path):
    """A person on a fit run's page types a customer never seen in training: the prediction is shown with the
    answer's warning under it (the unseen value named); types 1.234 in a number field of a column fit read with
    decimal commas: it is predicted as 1.234, not as the table's '1.234' (1234); then empties every field: the page says 'no prediction:'
    and the answer's note why, never a blank or 'null'."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ready
    from selenium.webdriver.support.ui import WebDriverWait

    expected = httpx.post(f"{fit_server}/predict", data={"Kunde": "Acme", "Stadt": "Köln", "Betrag": "2"}).json()
    expected = expected["predictions"][0]
    assert expected["warnings"] == ["column 'Kunde': 'Acme' was not seen in training; it was treated as unknown"]
    note = httpx.post(f"{fit_server}/predict", json={"records": [{}]}).json()["predictions"][0]["missing"]
    exact, thousands = (httpx.post(f"{fit_server}/predict", json={"records": [{"Kunde": "Acme", "Stadt": "Köln", "Betrag": b}]})
                        .json()["predictions"][0]["probabilities"] for b in (1.234, 1234.0))
    assert exact != thousands, "the two readings of '1.234' predict apart"
    driver, profile = _browser()
    try:
        driver.get(f"{fit_server}/")
        driver.find_element(By.ID, "Kunde").send_keys("Acme")
        driver.find_element(By.ID, "Stadt").send_keys("Köln")
        driver.find_element(By.ID, "Betrag").send_keys("2")
        driver.find_element(By.ID, "submit").click()
        shown = WebDriverWait(driver, 60).until(ready.presence_of_element_located((By.ID, "predicted-class")))
        assert shown.text == expected["prediction"]
        warnings = driver.find_element(By.ID, "warnings")
        assert warnings.is_displayed() and expected["warnings"][0] in warnings.text
        assert shown.location["y"] < warnings.location["y"], "the warnings are under the prediction"
        driver.save_screenshot(str(tmp_path / "warnings.png"))
        # 'Betrag' was read with decimal commas: the number field's "1.234" is 1.234 (a JSON number), not 1234
        betrag = driver.find_element(By.ID, "Betrag")
        betrag.clear()
        betrag.send_keys("1.234")
        driver.find_element(By.ID, "submit").click()
        WebDriverWait(driver, 60).until(ready.staleness_of(shown))
        WebDriverWait(driver, 60).until(ready.presence_of_element_located((By.ID, "predicted-class")))
        bars = [b.text for b in driver.find_elements(By.CSS_SELECTOR, "#result .bar")]
        assert len(bars) == 2 and all(any(c in b and f"{100 * p:.1f}%" in b for b in bars) for c, p in exact.items()), bars
        for field in ("Kunde", "Stadt", "Betrag"):
            driver.find_element(By.ID, field).clear()
        driver.find_element(By.ID, "submit").click()
        none = WebDriverWait(driver, 60).until(ready.presence_of_element_located((By.ID, "no-prediction")))
        assert none.text == f"no prediction: {note}" and note.startswith("no input in this record: every column")
        result = driver.find_element(By.ID, "result").text
        assert "null" not in result and "undefined" not in result and not driver.find_elements(By.ID, "error")
        assert not driver.find_elements(By.ID, "warnings"), "no warning of the earlier answer stays"
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)
    assert (tmp_path / "warnings.png").stat().st_size > 10_000


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_the_serve_command_serves_until_interrupted(small_export, tmp_path, capsys):
    from mmcore.cli import main

    port = _free_port()
    # A bad option is refused before anything is loaded (in-process: one interpreter start fewer).
    assert main(["serve", str(small_export), "--max-batch", "0"]) == 2
    assert "--max-batch: must be a positive int" in capsys.readouterr().err
    assert main(["serve", str(small_export), "--batch-threads", "0"]) == 2
    assert "--batch-threads: must be a positive int" in capsys.readouterr().err
    process = subprocess.Popen([sys.executable, "-m", "mmcore", "serve", str(small_export), "--port", str(port),
                                "--graph", "model.onnx", "--log-level", "warning"], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.3)
        answer = httpx.post(f"http://127.0.0.1:{port}/predict", json={"records": [{"text": "plus sign"}]}, timeout=30)
        assert answer.status_code == 200 and answer.json()["predictions"][0]["prediction"] in CLASSES
        assert httpx.get(f"http://127.0.0.1:{port}/metadata").json()["model"]["graph"] == "model.onnx"
    finally:
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=60)
    assert process.returncode in (0, 130), err
    assert f"on http://127.0.0.1:{port}" in out
