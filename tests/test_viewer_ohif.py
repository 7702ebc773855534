"""What a radiologist sees in OHIF after ``medplug batch`` pushed its results into Orthanc.

Real pieces end to end: Debian's Orthanc with DICOMweb, a generated CT study,
``medplug batch`` with a third-party plugin pushing its SR and heatmap into the
study, OHIF's published build (npm ``@ohif/app``, pinned, cached in
``.cache/ohif``) served beside a ``/dicom-web`` proxy, and headless Chromium.
Screenshots go to ``$MEDPLUG_TEST_ARTIFACTS`` (docs/images/ has copies).
"""

from __future__ import annotations

import io
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pydicom
import pytest
from batch_support import env_with

from medplug.ohif.install import OhifInstallError, ensure_ohif, installed_dist
from medplug.orthanc import OrthancServer, orthanc_available

CHROMIUM = os.environ.get("MEDPLUG_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("MEDPLUG_CHROMEDRIVER", "/usr/bin/chromedriver")
OHIF_CACHE = Path(__file__).resolve().parents[1] / ".cache" / "ohif"
SLOW = 120  # seconds: OHIF on 2 loaded cores with a software WebGL

webdriver = pytest.importorskip("selenium.webdriver")
if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
    pytest.skip("needs the Debian packages chromium and chromium-driver", allow_module_level=True)
if not orthanc_available():
    pytest.skip("needs the Debian packages orthanc and orthanc-dicomweb", allow_module_level=True)

from PIL import Image  # noqa: E402
from selenium.webdriver.common.action_chains import ActionChains  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

from medplug.ohif.server import serve_ohif  # noqa: E402

pytestmark = [pytest.mark.orthanc, pytest.mark.slow]


@pytest.fixture(scope="module")
def ohif_dist() -> Path:
    """The pinned OHIF build, fetched from npm once (``make test`` does it first)."""
    dist = installed_dist(OHIF_CACHE)
    if dist is not None:
        return dist
    if shutil.which("npm") is None:
        pytest.skip("OHIF is not in .cache/ohif and npm is not installed to fetch it")
    try:
        return ensure_ohif(OHIF_CACHE)
    except OhifInstallError as error:
        pytest.skip(f"OHIF could not be installed: {error}")


@pytest.fixture(scope="module")
def study(tmp_path_factory, intensity_site: Path, intensity_dir: Path):
    """Orthanc holding one generated CT study and what ``medplug batch`` pushed into it."""
    from medplug.sampledata import generate_cohort

    root = tmp_path_factory.mktemp("ohif_study")
    cohort = generate_cohort(root / "cohort", n_cases=1, seed=3)
    files = [p for p in (cohort / "cases" / "case0001" / "dicom").rglob("*") if p.is_file()]
    with OrthancServer(root / "orthanc") as orthanc:
        orthanc.upload(files)
        out = root / "batch"
        command = [sys.executable, "-m", "medplug.cli.main", "batch", orthanc.dicomweb]
        command += ["--plugin", "mean-intensity", "--model", str(intensity_dir), "--out", str(out)]
        command += ["--workers", "1"]
        result = subprocess.run(
            command, env=env_with(intensity_site), capture_output=True, text=True, timeout=600
        )
        assert result.returncode == 0, result.stdout + result.stderr
        (study_uid,) = [s["0020000D"]["Value"][0] for s in orthanc.get("/dicom-web/studies")]
        yield {
            "orthanc": orthanc,
            "uid": study_uid,
            "sr": pydicom.dcmread(next((out / "sr").glob("*.dcm"))),
            "ct": pydicom.dcmread(files[0], stop_before_pixels=True),
        }


@pytest.fixture
def browser(tmp_path: Path):
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        # WebGL through SwiftShader (CPU): OHIF's viewports and overlays need WebGL.
        "--use-angle=swiftshader",
        "--enable-unsafe-swiftshader",
        "--disable-quic",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--window-size=1400,900",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(CHROMEDRIVER))
    driver.set_page_load_timeout(SLOW)
    yield driver
    driver.quit()


@pytest.fixture
def artifacts(tmp_path: Path) -> Path:
    folder = Path(os.environ.get("MEDPLUG_TEST_ARTIFACTS", tmp_path / "artifacts"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def page_text(driver) -> str:
    return driver.execute_script("return document.body.innerText")


def wait_text(driver, pattern: str, what: str, timeout: float = SLOW) -> re.Match:
    """Wait until the page's visible text matches ``pattern``; fail naming ``what``."""
    found: list[re.Match] = []

    def check(d) -> bool:
        match = re.search(pattern, page_text(d))
        if match:
            found.append(match)
        return match is not None

    try:
        WebDriverWait(driver, timeout, poll_frequency=1).until(check)
    except Exception:
        logs = [e["message"][:200] for e in driver.get_log("browser") if e["level"] == "SEVERE"]
        raise AssertionError(f"OHIF did not show {what}; console errors: {logs[-5:]}") from None
    return found[0]


def dismiss_tour(driver) -> None:
    """OHIF's first-visit tour covers the viewport; a user would skip it."""
    for button in driver.find_elements(By.XPATH, "//*[text()='Skip all']"):
        if button.is_displayed():
            button.click()


def thumbnail(driver, description: str):
    xpath = f"//*[@data-cy='series-description-label' and text()='{description}']"
    WebDriverWait(driver, SLOW).until(lambda d: d.find_elements(By.XPATH, xpath))
    return driver.find_element(By.XPATH, xpath + "/ancestor::*[starts-with(@id,'thumbnail-')]")


def viewport_pixels(driver) -> np.ndarray:
    """The active viewport as RGB pixels, from a screenshot (WebGL canvases read blank)."""
    (grid,) = driver.find_elements(By.CSS_SELECTOR, "[data-cy='viewport-grid']") or [
        driver.find_element(By.TAG_NAME, "canvas")
    ]
    box = grid.rect
    ratio = driver.execute_script("return window.devicePixelRatio") or 1
    image = Image.open(io.BytesIO(driver.get_screenshot_as_png())).convert("RGB")
    left, top = int(box["x"] * ratio), int(box["y"] * ratio)
    crop = image.crop(
        (left, top, left + int(box["width"] * ratio), top + int(box["height"] * ratio))
    )
    return np.asarray(crop).astype(np.int16)


def wait_rendered(driver, colour: bool, what: str) -> np.ndarray:
    """Wait until the viewport shows an image (grey structure, or colour for a heatmap)."""
    deadline = time.monotonic() + SLOW
    while True:
        pixels = viewport_pixels(driver)
        spread = float(pixels.std())
        colourful = int((np.abs(pixels[..., 0] - pixels[..., 2]) > 60).sum())
        if spread > 20 and (colourful > 500 if colour else True):
            return pixels
        if time.monotonic() > deadline:
            raise AssertionError(
                f"{what}: viewport blank (std {spread:.1f}, {colourful} colour px)"
            )
        time.sleep(2)


def open_tag_browser(driver, description: str) -> None:
    """The series' menu (shown on hover) > Tag Browser, OHIF's view of every attribute."""
    item = thumbnail(driver, description)
    menu = item.find_element(By.CSS_SELECTOR, "button[data-cy$='-btn']")
    ActionChains(driver).move_to_element(item).pause(1).click(menu).perform()
    entry = WebDriverWait(driver, 30).until(
        lambda d: [e for e in d.find_elements(By.XPATH, "//*[@role='menuitem']") if "Tag" in e.text]
    )
    entry[0].click()


def search_tags(driver, query: str) -> list[str]:
    """Filter the Tag Browser and return the dialog's lines."""
    box = WebDriverWait(driver, 30).until(
        lambda d: d.find_element(By.XPATH, "//input[@placeholder='Search metadata']")
    )
    box.send_keys(Keys.CONTROL, "a")  # clear() bypasses React's change event
    box.send_keys(Keys.BACKSPACE, query)
    time.sleep(2)  # the filter is debounced
    dialog = driver.find_element(By.XPATH, "//*[@role='dialog']")
    lines = [line.strip() for line in dialog.text.splitlines()]
    # The list is virtualised: scroll it through to read every row.
    scroller = driver.execute_script(
        "return [...arguments[0].querySelectorAll('*')]"
        ".find(e => e.scrollHeight > e.clientHeight + 4 && e.clientHeight > 100) || null",
        dialog,
    )
    while scroller is not None:
        moved = driver.execute_script(
            "const e = arguments[0], before = e.scrollTop;"
            "e.scrollTop = before + e.clientHeight / 2; return e.scrollTop > before;",
            scroller,
        )
        if not moved:
            break
        time.sleep(0.3)
        lines += [line.strip() for line in dialog.text.splitlines()]
    return lines


def sr_values(sr: pydicom.Dataset) -> tuple[str, dict[str, str]]:
    """The SR's finding (label) and each 'Probability of ...' as written, read with pydicom."""
    finding, probabilities = "", {}

    def walk(items) -> None:
        nonlocal finding
        for item in items:
            name = (
                item.ConceptNameCodeSequence[0].CodeMeaning
                if "ConceptNameCodeSequence" in item
                else ""
            )
            if name == "Finding" and "ConceptCodeSequence" in item:
                finding = item.ConceptCodeSequence[0].CodeMeaning
            if item.get("ValueType") == "NUM" and name.startswith("Probability of"):
                probabilities[name] = str(item.MeasuredValueSequence[0].NumericValue)
            walk(item.get("ContentSequence", []))

    walk(sr.ContentSequence)
    return finding, probabilities


def test_ohif_shows_the_study_the_ct_and_medplug_results(
    ohif_dist: Path, study: dict, browser, artifacts: Path
) -> None:
    finding, probabilities = sr_values(study["sr"])
    assert finding in ("lesion", "no_lesion") and set(probabilities) == {
        "Probability of no_lesion",
        "Probability of lesion",
    }
    with serve_ohif(ohif_dist, study["orthanc"].dicomweb) as ohif:
        # The study list: the patient, and CT with medplug's SR and heatmap (OT) in the study.
        browser.get(ohif.url + "/")
        name = str(study["ct"].PatientName).split("^")[-1]
        wait_text(browser, rf"{name}[\s\S]*CT\\OT\\SR", "the study in the study list")
        browser.save_screenshot(str(artifacts / "ohif_study_list.png"))

        # The viewer opens the CT series (its slices, its window) with medplug's series beside.
        browser.get(f"{ohif.url}/viewer?StudyInstanceUIDs={study['uid']}")
        n_slices = wait_text(browser, r"I:\s*\d+ \(\d+/([1-9]\d*)\)", "the CT slice counter").group(
            1
        )
        assert int(n_slices) > 1
        dismiss_tour(browser)
        description = str(study["ct"].SeriesDescription)
        for label in (description, "medplug AI results", "medplug Grad-CAM"):
            thumbnail(browser, label)
        wait_rendered(browser, colour=False, what="CT series")
        browser.save_screenshot(str(artifacts / "ohif_ct.png"))

        # The heatmap (today an RGB Secondary Capture of the hottest slice) opens in colour.
        ActionChains(browser).double_click(thumbnail(browser, "medplug Grad-CAM")).perform()
        wait_rendered(browser, colour=True, what="Grad-CAM secondary capture")
        browser.save_screenshot(str(artifacts / "ohif_heatmap_sc.png"))

        # The SR's finding and probabilities, as OHIF shows them (Tag Browser: OHIF's SR
        # viewport draws only measurements with image coordinates; see docs/viewer.md).
        open_tag_browser(browser, "medplug AI results")
        lines = search_tags(browser, "Probability of lesion")
        assert "Probability of lesion" in lines
        lines = search_tags(browser, "NumericValue")
        shown = [float(line) for line in lines if re.fullmatch(r"-?\d+(\.\d+)?(e-?\d+)?", line)]
        for name, value in probabilities.items():  # OHIF prints the DICOM JSON number
            assert any(abs(number - float(value)) < 1e-9 for number in shown), (name, shown)
        browser.save_screenshot(str(artifacts / "ohif_sr_probabilities.png"))
        lines = search_tags(browser, "Finding")
        assert "Finding" in lines
        lines = search_tags(browser, finding)
        assert finding in lines  # the finding's coded value and meaning
