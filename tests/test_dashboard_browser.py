"""The dashboard in a real browser: headless Chromium (Debian's ``chromium`` and
``chromium-driver``, which ``.ci/run`` installs) driven by selenium, against a real stack:
nats-server, central with an API key, and a fake node that reports epochs when told.

The page asks for the key and refuses a wrong one, lists the job, shows its loss curve
growing as epochs are appended, and the SQL console answers; screenshots go to the
test's tmp folder. Selenium blocks, so every browser call runs in a thread and
central keeps serving on the test's event loop."""

from __future__ import annotations

import asyncio
import shutil
import time
from pathlib import Path

import grpc
import pytest

from central.server import CentralConfig, CentralServer
from fake_node import FakeNode
from protos import job_pb2, job_pb2_grpc
from protos.convert import bearer_metadata
from waiting import eventually

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
KEY = "dash-key"
WAIT_S = 30  # generous: a loaded 2-core machine

pytestmark = pytest.mark.skipif(
    CHROMIUM is None or DRIVER is None,
    reason="needs Debian's chromium and chromium-driver (apt-get install -y chromium chromium-driver; .ci/run does)")


@pytest.fixture
async def stack(nats_server, tmp_path):
    config = CentralConfig.load(env={}, home=tmp_path / "home", nats_url=nats_server.url, grpc_port=0, rest_port=0,
                                host="127.0.0.1", api_key=KEY, heartbeat_s=0.5, node_timeout_s=30)
    central = CentralServer(config)
    await central.start()
    node = await FakeNode(central.grpc_address, name="fake-gpu", slots=1).start()
    node.start_heartbeats(0.5)
    channel = grpc.aio.insecure_channel(central.grpc_address)
    try:
        yield central, node, job_pb2_grpc.JobServiceStub(channel)
    finally:
        await channel.close()
        await node.stop()
        await central.stop()


@pytest.fixture
def driver():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                 "--window-size=1400,1000"):
        options.add_argument(flag)
    browser = webdriver.Chrome(service=Service(DRIVER), options=options)
    browser.set_page_load_timeout(WAIT_S)
    yield browser
    browser.quit()


async def in_browser(fn, *args):
    return await asyncio.to_thread(fn, *args)


def wait_for(browser, css: str, *, text: str | None = None, attribute: tuple[str, str] | None = None):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    def found(b):
        for element in b.find_elements(By.CSS_SELECTOR, css):
            if text is not None and text not in element.text:
                continue
            if attribute is not None and element.get_attribute(attribute[0]) != attribute[1]:
                continue
            if element.is_displayed() or attribute is not None:
                return element
        return False

    return WebDriverWait(browser, WAIT_S, poll_frequency=0.05).until(
        found, message=f"{css} (text {text!r}, attribute {attribute}) never showed")


def type_into(browser, css: str, value: str, submit_css: str) -> None:
    from selenium.webdriver.common.by import By

    field = wait_for(browser, css)
    field.clear()
    field.send_keys(value)
    browser.find_element(By.CSS_SELECTOR, submit_css).click()


async def test_login_jobs_live_curve_and_sql_in_chromium(stack, driver, tmp_path):
    central, node, jobs = stack
    answer = await jobs.SubmitJob(job_pb2.SubmitJobRequest(config=job_pb2.JobConfig(
        job_type=job_pb2.JOB_TYPE_TRAINING, epochs=6, batch_size=8, dataset_uri="builtin://iris", job_id="dash-job-1")),
        metadata=bearer_metadata(KEY))
    job_id = answer.job_id
    await eventually(lambda: node.assignments, timeout=WAIT_S, message="the fake node got the job")
    await node.progress(job_id, 1, loss=1.0)

    # the page asks for the key: a wrong one is refused, the right one lets it in
    await in_browser(driver.get, central.rest_url + "/#/jobs")
    await in_browser(type_into, driver, "#login-key", "wrong", "#login-submit")
    await in_browser(lambda: wait_for(driver, "#login-error", text="refused"))
    await in_browser(type_into, driver, "#login-key", KEY, "#login-submit")
    row = await in_browser(lambda: wait_for(driver, f'#jobs-table tr[data-job-id="{job_id}"]'))
    assert "running" in row.text and "1/6" in row.text
    assert await in_browser(driver.execute_script, "return sessionStorage.getItem('cyxwiz.apiKey')") == KEY
    assert KEY not in await in_browser(lambda: driver.current_url)

    # a page left ends its live stream: more loads than the browser's 6 connections a host
    for i in range(8):
        await in_browser(driver.get, central.rest_url + f"/?load={i}#/jobs")
        await in_browser(lambda: wait_for(driver, f'#jobs-table tr[data-job-id="{job_id}"]'))

    # the job page: the history, then every epoch as it is appended
    await in_browser(lambda: driver.get(central.rest_url + f"/#/job/{job_id}"))
    await in_browser(lambda: wait_for(driver, "#loss-chart", attribute=("data-points", "1")))
    await in_browser(lambda: wait_for(driver, "#live-status", text="live"))
    for epoch in (2, 3, 4):
        await node.progress(job_id, epoch, loss=1.0 / epoch)
        await in_browser(lambda: wait_for(driver, "#loss-chart", attribute=("data-points", str(epoch))))
    assert "4/6" in (await in_browser(lambda: wait_for(driver, "#job-facts"))).text
    await in_browser(driver.save_screenshot, str(tmp_path / "job-page.png"))

    # one epoch, timed from its append to the page (the bound is loose: a loaded machine)
    started = time.monotonic()
    await node.progress(job_id, 5, loss=0.2)
    await in_browser(lambda: wait_for(driver, "#loss-chart", attribute=("data-points", "5")))
    assert time.monotonic() - started < 5.0

    # the SQL console on the read-only endpoint
    await in_browser(lambda: driver.get(central.rest_url + "/#/sql"))
    await in_browser(type_into, driver, "#sql-input",
                     f"SELECT job_id, epochs FROM jobs WHERE job_id = '{job_id}'", "#sql-run")
    result = await in_browser(lambda: wait_for(driver, "#sql-result table", text=job_id))
    assert "6" in result.text
    await in_browser(type_into, driver, "#sql-input", "DROP TABLE jobs", "#sql-run")
    await in_browser(lambda: wait_for(driver, "#sql-error", text="only read statements are allowed"))
    await in_browser(driver.save_screenshot, str(tmp_path / "sql-console.png"))

    # the other pages render what the read model holds
    await in_browser(lambda: driver.get(central.rest_url + "/#/nodes"))
    await in_browser(lambda: wait_for(driver, "#nodes-table", text="fake-gpu"))
    await in_browser(lambda: wait_for(driver, "#node-chart-0"))
    await in_browser(lambda: driver.get(central.rest_url + "/#/events?type=JobSubmitted"))
    assert job_id in (await in_browser(lambda: wait_for(driver, "#events-table", text="JobSubmitted"))).text
    await in_browser(lambda: driver.get(central.rest_url + "/#/deployments"))
    await in_browser(lambda: wait_for(driver, "#deployments-table", text="No deployments"))
    errors = [e["message"] for e in await in_browser(driver.get_log, "browser") if "Uncaught" in e["message"]]
    assert errors == []
    assert Path(tmp_path / "job-page.png").stat().st_size > 10_000
