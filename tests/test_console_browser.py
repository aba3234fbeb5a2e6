"""The console in a real browser: Debian's headless Chromium driven by Selenium through Debian's
chromedriver (nothing is downloaded), against the console the demo serves (`worker.demo.
console_view`) on a real database: log in, the line view, an alert's evidence crops, acknowledge
it, correct a crop's class, the quality page. Screenshots go to $TEST_ARTEFACTS_DIR/console
(default test-artefacts/console). `.ci/run` installs Chromium where it is missing; elsewhere these
tests skip and say why."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa

from worker.core.catalogue import load_catalogue
from worker.core.evidence import EvidencePolicy
from worker.core.records import Detection, FrameMeta, FrameResult, KafkaCoordinates, TileRef
from worker.core.thresholds import ClassThresholds
from worker.demo.console_view import RunningConsole, start_console
from worker.storage.writer import StorageWriter

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(
    not (CHROMIUM and CHROMEDRIVER),
    reason="needs Debian's chromium and chromium-driver (apt install chromium chromium-driver; .ci/run does)",
)

MODEL = "d" * 64
ROLL = "F7 top work roll"
T0 = datetime(2026, 11, 30, 6, 0, tzinfo=UTC)
MARKS = 10
ARTEFACTS = Path(os.environ.get("TEST_ARTEFACTS_DIR", "test-artefacts")) / "console"


def _strip() -> list[FrameResult]:
    """A strip of 12 frames with a roll mark (rolling, tile 2) on 10 of them, a few holes."""
    results = []
    policy = EvidencePolicy(clean_sample=0.0)
    rng = np.random.default_rng(3)
    for n in range(12):
        frame_id = f"C24-0815-f{n:03d}"
        meta = FrameMeta(
            frame_id,
            "L1",
            "cam-top-1",
            "top",
            "C24-0815",
            T0 + timedelta(seconds=n),
            n * 0.4,
            0.25,
            0.25,
            10.0,
            width=1792,
            height=256,
        )
        found = ([(2, "rolling", 0.9)] if n < MARKS else []) + ([(5, "holes", 0.7)] if n % 4 == 1 else [])
        detections = tuple(
            Detection(
                frame_id,
                t,
                name,
                p,
                0.5,
                meta.along_m(128),
                meta.across_mm(t * 256 + 128),
                meta.along_m(0),
                meta.along_m(256),
                t * 256,
                0,
                256,
            )
            for t, name, p in found
        )
        crops = []
        for t in sorted({t for t, _, _ in found}):
            pixels = rng.integers(90, 140, (256, 256)).astype(np.uint8)
            pixels[100:150, 90:170] = 30 if t == 2 else 200  # a dark mark or a bright hole
            crops.append(policy.encode(TileRef(frame_id, t, t * 256, 0, 256), pixels))
        results.append(
            FrameResult(
                meta,
                KafkaCoordinates("mill.frames", 0, n),
                MODEL,
                7,
                detections,
                T0 + timedelta(seconds=n, milliseconds=200),
                evidence=tuple(crops),
            )
        )
    return results


@pytest.fixture
def console(database_url: str, engine: sa.Engine) -> Iterator[RunningConsole]:
    writer = StorageWriter(engine)
    writer.ensure_catalogue(load_catalogue())
    names = load_catalogue().names
    writer.register_model(MODEL, "resnet50", 256, names, ClassThresholds.from_values(names, [0.5] * 3), {})
    outcome = writer.write_results(_strip())
    evidence = sorted(
        d.record_id for r in outcome.stored.values() for d in r.detections if d.class_name == "rolling"
    )
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO alerts (dedup_key, rule, class_id, strip_id, roll, severity, position_start_m,"
                " position_end_m, detection_count, pitch_m, evidence, rule_kind, surface, line, camera,"
                " frame_ids, max_confidence, model_version) VALUES ('roll/C24-0815', 'roll-marks', 3,"
                " 'C24-0815', :roll, 'high', 0, 3.7, :n, 0.4, :ev, 'periodic', 'top', 'L1', 'cam-top-1',"
                " '{}', 0.9, :m)"
            ),
            {"roll": ROLL, "n": MARKS, "ev": evidence, "m": MODEL},
        )
    running = start_console(database_url, port=0)
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
def browser() -> Iterator[object]:
    from selenium import webdriver  # noqa: PLC0415
    from selenium.webdriver.chrome.service import Service  # noqa: PLC0415

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,900"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(executable_path=str(CHROMEDRIVER)))
    driver.implicitly_wait(5)
    try:
        yield driver
    finally:
        driver.quit()


def _wait_for(driver: object, text: str, timeout_s: float = 20.0) -> None:
    """Until the page shows `text`: a click that navigates returns before the next page is there."""
    from selenium.webdriver.support.ui import WebDriverWait  # noqa: PLC0415

    WebDriverWait(driver, timeout_s).until(lambda d: text in d.page_source)  # type: ignore[attr-defined]


def _shot(driver: object, name: str) -> None:
    ARTEFACTS.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(ARTEFACTS / f"{name}.png"))  # type: ignore[attr-defined]


def test_maintenance_clicks_from_the_roll_alert_to_its_crops_acknowledges_and_corrects_a_class(
    console: RunningConsole, browser: object, engine: sa.Engine
) -> None:
    from selenium.webdriver.common.by import By  # noqa: PLC0415

    driver = browser
    driver.get(console.url)  # type: ignore[attr-defined]
    assert "/login" in driver.current_url  # type: ignore[attr-defined]
    driver.find_element(By.NAME, "name").send_keys(console.user)  # type: ignore[attr-defined]
    driver.find_element(By.NAME, "password").send_keys(console.password)  # type: ignore[attr-defined]
    _shot(driver, "login")
    driver.find_element(By.CSS_SELECTOR, "form button[type=submit]").click()  # type: ignore[attr-defined]
    _wait_for(driver, "The strips processed last")

    # the line view: the strip's map with a dot per detection and the alert shaded
    assert driver.find_element(By.TAG_NAME, "h1").text == "Line"  # type: ignore[attr-defined]
    assert len(driver.find_elements(By.CSS_SELECTOR, "circle.detection")) == MARKS + 3  # type: ignore[attr-defined]
    assert len(driver.find_elements(By.CSS_SELECTOR, "rect.alert")) == 1  # type: ignore[attr-defined]
    _shot(driver, "line")

    # the alert "rolling — F7 top work roll" and the ten crops behind it
    driver.find_element(By.LINK_TEXT, "Alerts").click()  # type: ignore[attr-defined]
    _wait_for(driver, "Open alerts")
    assert ROLL in driver.page_source  # type: ignore[attr-defined]
    driver.find_element(By.CSS_SELECTOR, "td a").click()  # type: ignore[attr-defined]
    _wait_for(driver, "The evidence:")
    assert f"rolling — {ROLL}" in driver.find_element(By.TAG_NAME, "h1").text  # type: ignore[attr-defined]
    images = driver.find_elements(By.CSS_SELECTOR, ".crop img")  # type: ignore[attr-defined]
    assert len(images) == MARKS
    from selenium.webdriver.support.ui import WebDriverWait  # noqa: PLC0415

    decoded = (
        "return Array.from(document.querySelectorAll('.crop img'))"
        ".filter(i => i.complete && i.naturalWidth == 256).length"
    )
    # every crop was served and decoded by the browser (a TimeoutException says it was not)
    WebDriverWait(driver, 20).until(lambda d: d.execute_script(decoded) == MARKS)
    _shot(driver, "alert")
    driver.find_element(By.ID, "acknowledge").click()  # type: ignore[attr-defined]
    _wait_for(driver, "Acknowledged.")
    assert "Acknowledged." in driver.page_source and f"by {console.user}" in driver.page_source  # type: ignore[attr-defined]

    # a crop: correct its class
    driver.find_element(By.CSS_SELECTOR, ".crop a").click()  # type: ignore[attr-defined]
    _wait_for(driver, "What the model found")
    driver.find_element(By.CSS_SELECTOR, "input[name=verdict][value=correct]").click()  # type: ignore[attr-defined]
    driver.find_element(By.CSS_SELECTOR, "input[name=labels][value=scratches]").click()  # type: ignore[attr-defined]
    driver.find_element(By.NAME, "note").send_keys("a scratch along the roll mark")  # type: ignore[attr-defined]
    driver.find_element(By.CSS_SELECTOR, "#review button").click()  # type: ignore[attr-defined]
    _wait_for(driver, "Reviewed.")
    assert "Reviewed." in driver.page_source  # type: ignore[attr-defined]
    _shot(driver, "crop")
    with engine.connect() as conn:
        verdict, labels, reviewer = conn.execute(
            sa.text("SELECT verdict, labels, reviewer FROM reviews")
        ).one()
        acknowledged_by = conn.execute(sa.text("SELECT acknowledged_by FROM alerts")).scalar_one()
    assert (verdict, labels, reviewer, acknowledged_by) == (
        "correct",
        ["scratches"],
        console.user,
        console.user,
    )

    # the gallery and the quality page
    driver.find_element(By.LINK_TEXT, "Gallery").click()  # type: ignore[attr-defined]
    _wait_for(driver, f"{MARKS + 3} crops")
    assert f"{MARKS + 3} crops" in driver.page_source  # type: ignore[attr-defined]
    _shot(driver, "gallery")
    driver.find_element(By.LINK_TEXT, "Quality").click()  # type: ignore[attr-defined]
    _wait_for(driver, "Precision from reviews")  # type: ignore[attr-defined]
    _shot(driver, "quality")
    for name in ("login", "line", "alert", "crop", "gallery", "quality"):
        assert (ARTEFACTS / f"{name}.png").stat().st_size > 5_000
