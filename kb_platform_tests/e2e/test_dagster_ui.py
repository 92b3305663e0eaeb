"""The UI path in a real browser (Debian's Chromium, headless, through Selenium and chromedriver)
against the end-to-end `dagster dev`: the asset graph shows the pipeline, a failed document's
partition shows its error class (in its run's logs), and "Materialize all" → "Failed" → launch,
clicked as a person would, runs the failed partitions again (one run for one partition, a backfill
for several). Screenshots go to test-artifacts/ui/."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from dagster import DagsterRun, DagsterRunStatus, RunsFilter
from selenium import webdriver
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By

from kb_platform.config import REPO_ROOT
from kb_platform.contracts import Modality
from kb_platform.resources.kafka import KafkaResource
from kb_platform.runs import failure_class
from kb_platform_tests.e2e.test_daemon_reliability import eventually, instance_of
from kb_platform_tests.integration.kafka_helpers import message, produce

ARTIFACTS = REPO_ROOT / "test-artifacts" / "ui"
PIPELINE = [
    "raw_documents",
    "extracted_pages",
    "ocr_text",
    "transcripts",
    "text_chunks",
    "text_embeddings",
    "image_embeddings",
    "search_index",
]
BROKEN = "bad-inputs/pillow/broken_data_stream.png"  # passes intake, fails its parse


def _executable(*names: str) -> str:
    for name in names:
        found = shutil.which(name)
        if found:
            return found
    raise AssertionError(f"none of {names} installed (deploy/local/setup.sh installs them)")


@pytest.fixture(scope="module")
def browser() -> Iterator[webdriver.Chrome]:
    options = webdriver.ChromeOptions()
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage"):
        options.add_argument(argument)
    options.add_argument("--window-size=1600,1000")
    options.binary_location = _executable("chromium", "chromium-browser")
    driver = webdriver.Chrome(service=Service(_executable("chromedriver")), options=options)
    driver.implicitly_wait(0)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    try:
        yield driver
    finally:
        driver.quit()


class Page:
    """The browser on one Dagster UI page: waits for what a person would wait for."""

    def __init__(self, driver: webdriver.Chrome, base: str):
        self.driver = driver
        self.base = base

    def open(self, path: str) -> None:
        self.driver.get(self.base + path)

    def wait(self, probe: Callable[[], object], what: str, timeout_s: float = 60) -> object:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                # The newsletter dialog's fading-in backdrop can cover its own Skip button: that
                # click raises like a covered probe, and the next round tries again.
                self.dismiss_newsletter()
                found = probe()
            except WebDriverException:
                found = None
            if found:
                return found
            time.sleep(0.5)
        self.shot("timed-out")
        raise AssertionError(f"the page never showed {what}: {self.text()[:2000]}")

    def dismiss_newsletter(self) -> None:
        # A fresh instance greets its first visitor with a newsletter sign-up dialog.
        for skip in self.driver.find_elements(By.XPATH, "//button[normalize-space()='Skip']"):
            if skip.is_displayed():
                skip.click()

    def text(self) -> str:
        return self.driver.find_element(By.TAG_NAME, "body").text

    def click(self, label: str, *, exact: bool = False) -> str:
        """Clicks the visible, enabled button with ``label``; returns its text. A click that
        something covers (the newsletter dialog, a toast) is tried again."""
        test = (
            f"normalize-space()='{label}'" if exact else f"contains(normalize-space(), '{label}')"
        )

        def attempt() -> str | None:
            for candidate in self.driver.find_elements(By.XPATH, f"//button[{test}]"):
                if candidate.is_displayed() and candidate.is_enabled():
                    text = candidate.text or label
                    candidate.click()
                    return text
            return None

        return self.wait(attempt, f"a button '{label}' to click")  # type: ignore[return-value]

    def shot(self, name: str) -> Path:
        path = ARTIFACTS / f"{name}.png"
        self.driver.save_screenshot(str(path))
        return path


def test_the_ui_shows_the_pipeline_a_failed_partition_and_backfills_it_by_clicking(
    dagster_env: dict[str, str],
    e2e_kafka: KafkaResource,
    corpus_dir: Path,
    browser: webdriver.Chrome,
) -> None:
    topic = e2e_kafka.topics().ingest(Modality.IMAGE)
    (offset,) = produce(e2e_kafka, topic, [message(corpus_dir / BROKEN, "image")])
    with instance_of(dagster_env) as instance:
        failed = eventually(
            lambda: next(
                (
                    r
                    for r in instance.get_runs(
                        RunsFilter(tags={"kb/source-topic": topic, "kb/source-offset": offset})
                    )
                    if r.status is DagsterRunStatus.FAILURE
                ),
                None,
            ),
            300,
            "the broken image's run to fail",
        )
        doc_id = failed.tags["kb/doc_id"]
        error_class = failure_class(instance, failed.run_id)
        assert error_class == "Corrupt"

        page = Page(browser, f"http://127.0.0.1:{dagster_env['KB_DAGSTER_PORT']}")

        # The asset graph: every asset of the pipeline, upstream of the index.
        page.open("/assets/search_index?view=lineage&lineageScope=upstream&lineageDepth=10")
        page.wait(lambda: all(name in page.text() for name in PIPELINE), "the pipeline's assets")
        assert page.shot("asset-graph").stat().st_size > 0

        # The failed document's partition says its run failed; its logs give the error class.
        page.open(f"/assets/extracted_pages?view=partitions&partition={doc_id}")
        page.wait(lambda: "did not materialize this asset" in page.text(), "the failed run")
        page.shot("failed-partition")
        page.click("View logs")
        page.wait(lambda: f"{error_class}:" in page.text(), "the error class in the run's logs")
        page.shot("failed-partition-logs")

        # Materialize all -> Failed -> Launch backfill, as a person would.
        page.open("/locations/kb_platform/jobs/process_documents")
        page.click("Materialize all")

        def partition_selection() -> bool:
            # A confirmation comes first: the CLIP checkpoint upstream is not trained here.
            for confirm in browser.find_elements(By.XPATH, "//button[normalize-space()='Confirm']"):
                if confirm.is_displayed():
                    confirm.click()  # a covered click raises; page.wait tries again
            return "Partition selection" in page.text()

        page.wait(partition_selection, "the partition selection")
        page.click("Failed", exact=True)
        page.wait(lambda: "0 partitions" not in page.text(), "the failed partitions selected")
        # One failed partition is launched as one run, several as a backfill.
        page.shot("backfill-dialog")
        clicked_at = time.time()
        label = page.click("Launch")

        def relaunched() -> DagsterRun | None:
            for run in instance.get_runs(RunsFilter(tags={"dagster/partition": doc_id})):
                record = instance.get_run_record_by_id(run.run_id)
                launched_here = "kb/source-topic" not in run.tags
                if launched_here and record and record.create_timestamp.timestamp() > clicked_at:
                    return run if run.is_finished else None
            return None

        again = eventually(relaunched, 300, f"the run that '{label}' launched")
        if "backfill" in label.lower():
            assert again.tags.get("dagster/backfill"), again.tags
        # The bytes are still broken: the document fails again, for the same reason.
        assert again.status is DagsterRunStatus.FAILURE
        assert failure_class(instance, again.run_id) == "Corrupt"
        page.open(f"/runs/{again.run_id}")
        page.wait(lambda: "Corrupt:" in page.text(), "the new run's failure")
        page.shot("run-again")
