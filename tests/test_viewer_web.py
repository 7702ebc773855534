"""The web page served by ``medplug serve``, end to end in headless Chromium (Selenium)."""

from __future__ import annotations

import io
import os
import zipfile
from pathlib import Path

import pytest
from viewer_support import (
    install_bright_spot,
    phantom,
    write_bright_spot_model,
    write_dicom_series,
    write_nifti,
)

from medplug.serve import ServeSettings, create_app
from medplug.serve.background import serve_in_thread

CHROMIUM = os.environ.get("MEDPLUG_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("MEDPLUG_CHROMEDRIVER", "/usr/bin/chromedriver")
TOKEN = "web-test-token-0123456789"

webdriver = pytest.importorskip("selenium.webdriver")
if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
    pytest.skip("needs the Debian packages chromium and chromium-driver", allow_module_level=True)

from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support import expected_conditions as ec  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402


@pytest.fixture
def server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    site = install_bright_spot(tmp_path / "plugin")
    monkeypatch.syspath_prepend(str(site))
    write_bright_spot_model(tmp_path / "models")
    app = create_app(ServeSettings(token=TOKEN, models_dir=tmp_path / "models"))
    with serve_in_thread(app) as url:
        yield url


@pytest.fixture
def browser(tmp_path: Path):
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--window-size=1200,900",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(CHROMEDRIVER))
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


@pytest.fixture
def artifacts(tmp_path: Path) -> Path:
    folder = Path(os.environ.get("MEDPLUG_TEST_ARTIFACTS", tmp_path / "artifacts"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def zipped_series(tmp_path: Path) -> Path:
    series = write_dicom_series(tmp_path / "series", phantom())
    path = tmp_path / "study.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for file in sorted(series.iterdir()):
            archive.write(file, f"study/{file.name}")
    return path


def test_page_predicts_a_zipped_series_and_a_nifti(
    server: str, browser, tmp_path: Path, artifacts: Path
) -> None:
    wait = WebDriverWait(browser, 60)
    browser.get(server + "/")
    wait.until(ec.text_to_be_present_in_element((By.ID, "error"), "401"))  # no token yet
    browser.find_element(By.ID, "token").send_keys(TOKEN, Keys.TAB)
    wait.until(
        ec.presence_of_element_located((By.CSS_SELECTOR, "#plugin option[value='bright-spot']"))
    )
    browser.find_element(By.ID, "plugin").send_keys("bright-spot")
    browser.find_element(By.ID, "file").send_keys(str(zipped_series(tmp_path)))
    browser.find_element(By.ID, "report").send_keys("Beam hardening artifact.")
    wait.until(ec.element_to_be_clickable((By.ID, "run"))).click()
    wait.until(ec.text_to_be_present_in_element((By.ID, "status"), "Done"))

    assert browser.find_element(By.ID, "label").text == "lesion"
    rows = browser.find_elements(By.CSS_SELECTOR, "#probabilities tr")
    assert [row.find_elements(By.TAG_NAME, "td")[0].text for row in rows] == [
        "no_lesion",
        "lesion",
    ]
    warnings = [item.text for item in browser.find_elements(By.CSS_SELECTOR, "#warnings li")]
    assert "report mentions artifacts" in warnings
    assert any(text.startswith("anisotropic voxels") for text in warnings)
    overlay = browser.find_element(By.ID, "overlay")
    assert browser.execute_script("return arguments[0].naturalWidth", overlay) == 40
    assert "slice 8 of 12" in browser.find_element(By.ID, "caption").text
    screenshot = artifacts / "serve_page.png"
    assert browser.save_screenshot(str(screenshot))
    assert screenshot.stat().st_size > 10_000

    nifti = write_nifti(tmp_path / "healthy.nii.gz", phantom(blob=False))
    browser.find_element(By.ID, "file").send_keys(str(nifti))
    browser.find_element(By.ID, "report").clear()
    browser.find_element(By.ID, "run").click()
    wait.until(ec.text_to_be_present_in_element((By.ID, "label"), "no_lesion"))
    assert browser.find_element(By.ID, "error").text == ""


def test_page_shows_the_medplug_error_for_a_bad_file(server: str, browser, tmp_path: Path) -> None:
    wait = WebDriverWait(browser, 60)
    browser.get(server + "/")
    browser.find_element(By.ID, "token").send_keys(TOKEN, Keys.TAB)
    wait.until(
        ec.presence_of_element_located((By.CSS_SELECTOR, "#plugin option[value='bright-spot']"))
    )
    bad = tmp_path / "broken.zip"
    bad.write_bytes(zipfile_with_slip())
    browser.find_element(By.ID, "file").send_keys(str(bad))
    wait.until(ec.element_to_be_clickable((By.ID, "run"))).click()
    wait.until(ec.text_to_be_present_in_element((By.ID, "error"), "Prediction failed: 400"))
    assert "refused" in browser.find_element(By.ID, "error").text


def zipfile_with_slip() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("../../outside.dcm", b"x")
    return buffer.getvalue()
