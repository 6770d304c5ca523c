"""The MLflow UI in a real headless Chromium (Debian's chromium + chromedriver, via Selenium), and the helpers
for the Prefect UI's test (tests/integration/test_upkeep.py: a flow run's link and its summary artifact, opened
after the command has exited, in `prefect server start` on that PREFECT_HOME).

Screenshots go to the test's tmp_path; set TRACKFLOW_SCREENSHOTS=DIR to also copy them
there (the README's pictures are made that way).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.helpers import processes as P
from tests.helpers.cli import TRACKFLOW, call_main
from tests.helpers.servers import free_port, spawn, stop, wait_http

pytestmark = pytest.mark.usefixtures("prefect_server")

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"


@pytest.fixture
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not Path(p).exists()]
    assert not missing, f"{missing} missing: apt-get install chromium chromium-driver (.ci/run does)"
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1600,1000",
                "--disable-gpu", "--no-first-run"):
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    try:
        yield driver
    finally:
        driver.quit()


def wait_for_text(driver, needles: list[str], timeout: float = 90) -> str:
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    def body(d):
        return d.find_element(By.TAG_NAME, "body").text

    try:
        WebDriverWait(driver, timeout, poll_frequency=0.5).until(lambda d: all(n in body(d) for n in needles))
    except TimeoutException:
        text = body(driver)
        raise AssertionError(f"page never showed {[n for n in needles if n not in text]}; it shows:\n{text[:3000]}")
    return body(driver)


def screenshot(driver, tmp_path: Path, name: str) -> Path:
    path = tmp_path / f"{name}.png"
    driver.save_screenshot(str(path))
    assert path.read_bytes()[:4] == b"\x89PNG" and path.stat().st_size > 10_000
    if os.environ.get("TRACKFLOW_SCREENSHOTS"):
        dest = Path(os.environ["TRACKFLOW_SCREENSHOTS"])
        dest.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, dest / path.name)
    return path


@pytest.mark.slow
def test_mlflow_ui_shows_the_sweep_trials(tmp_path, browser, client, mlflow_store):
    p = call_main("sweep", "--n-samples", "300", "--epochs", "3", "--lrs", "0.001,0.01,0.1")
    assert p.returncode == 0, p.stderr
    exp = client.get_experiment_by_name("classifier")
    runs = client.search_runs([exp.experiment_id])
    trials = sorted((r for r in runs if r.data.tags.get("mlflow.parentRunId")), key=lambda r: float(r.data.params["lr"]))
    assert len(trials) == 3

    port = free_port()
    ui = spawn([TRACKFLOW, "ui", "--port", port], tmp_path / "ui.log", os.environ | {"MLFLOW_TRACKING_URI": mlflow_store})
    try:
        wait_http(f"http://127.0.0.1:{port}/health", ui, tmp_path / "ui.log")
        # one server process under the mlflow command, and no GenAI job runner (MLflow's defaults start 9 more)
        tree = [" ".join(p.cmdline()) for p in P.descendants(ui.pid)]
        assert len(tree) == 1 and "--workers 1" in tree[0], tree
        base = f"http://127.0.0.1:{port}"
        browser.get(f"{base}/#/experiments/{exp.experiment_id}/runs")
        parent = next(r for r in runs if not r.data.tags.get("mlflow.parentRunId"))
        wait_for_text(browser, ["classifier", parent.info.run_name])
        screenshot(browser, tmp_path, "mlflow-experiment")

        ids = ",".join(f'"{r.info.run_id}"' for r in trials)
        browser.get(f"{base}/#/compare-runs?runs=[{ids}]&experiments=[\"{exp.experiment_id}\"]")
        text = wait_for_text(browser, ["Comparing 3 Runs", "lr 0.001 0.01 0.1", "test_accuracy"])
        for r in trials:  # each trial's own numbers are on the compare page
            assert r.info.run_name in text
            assert str(round(r.data.metrics["test_accuracy"], 3)) in text
        screenshot(browser, tmp_path, "mlflow-compare")
    finally:
        stop(ui)
