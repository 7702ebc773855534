"""What a radiologist sees in OHIF after ``medplug batch`` pushed its results into Orthanc.

Real pieces end to end: Debian's Orthanc with DICOMweb, a generated CT study,
``medplug batch`` with third-party plugins pushing their SR, heatmap and SEG into the
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
from plugin_distribution import install_plugin_distribution

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


BRIGHT_REGION_PLUGIN = '''
import numpy as np

from medplug.contract import InputSpec, Plugin, PluginInfo, Prediction, Segment, Segmentation


class BrightRegionPlugin(Plugin):
    """Segments bright voxels (> 300 HU) in the middle third of the slices: a mask whose
    slices a viewer test can check."""

    name = "bright-region"

    def __init__(self) -> None:
        self.info = self.describe()

    @classmethod
    def describe(cls) -> PluginInfo:
        return PluginInfo(
            name=cls.name, version="1.0", task="segmentation", labels=["absent", "present"],
            inputs={"image": InputSpec(kind="image", spatial_dims=3)},
        )

    @classmethod
    def from_pretrained(cls, model_dir):
        return cls()

    def _predict(self, case):
        array = case.image.array
        n = array.shape[2]
        mask = np.zeros(array.shape, dtype=np.uint8)
        middle = slice(n // 3, 2 * n // 3)
        mask[:, :, middle] = array[:, :, middle] > 300
        p = float(mask.mean() > 0)
        return Prediction(
            plugin=self.name, plugin_version="1.0", case_id=case.case_id,
            label="present" if p else "absent", probabilities={"absent": 1 - p, "present": p},
            segmentation=Segmentation(mask, [Segment(1, "bright region")]),
        )
'''


@pytest.fixture(scope="module")
def study(tmp_path_factory, intensity_site: Path, intensity_dir: Path):
    """Orthanc holding one generated CT study and what ``medplug batch`` pushed into it."""
    from medplug.sampledata import generate_cohort

    root = tmp_path_factory.mktemp("ohif_study")
    # A second third-party plugin that returns a mask: the batch writes it as a DICOM SEG.
    seg_site = install_plugin_distribution(
        root / "bright_region", "acme-bright-region", "acme_bright_region",
        BRIGHT_REGION_PLUGIN, {"bright-region": "acme_bright_region:BrightRegionPlugin"},
    )  # fmt: skip
    (root / "bright_region_model").mkdir()
    cohort = generate_cohort(root / "cohort", n_cases=1, seed=3)
    files = [p for p in (cohort / "cases" / "case0001" / "dicom").rglob("*") if p.is_file()]
    with OrthancServer(root / "orthanc") as orthanc:
        orthanc.upload(files)
        out = root / "batch"
        command = [sys.executable, "-m", "medplug.cli.main", "batch", orthanc.dicomweb]
        command += ["--plugin", "mean-intensity", "--model", str(intensity_dir), "--out", str(out)]
        command += ["--plugin", "bright-region", "--model", str(root / "bright_region_model")]
        command += ["--workers", "1"]
        env = env_with(intensity_site)
        env["PYTHONPATH"] = os.pathsep.join([str(seg_site), env["PYTHONPATH"]])
        result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stdout + result.stderr
        (study_uid,) = [s["0020000D"]["Value"][0] for s in orthanc.get("/dicom-web/studies")]
        yield {
            "orthanc": orthanc,
            "uid": study_uid,
            "ct": pydicom.dcmread(files[0], stop_before_pixels=True),
            "ct_files": files,
            "outputs": outputs_by_kind(out),
        }


SOP_KINDS = {
    "1.2.840.10008.5.1.4.1.1.88.34": "sr",
    "1.2.840.10008.5.1.4.1.1.7": "sc",
    "1.2.840.10008.5.1.4.1.1.30": "pm",
    "1.2.840.10008.5.1.4.1.1.66.4": "seg",
}


def outputs_by_kind(out: Path) -> dict[str, list[pydicom.Dataset]]:
    """The DICOM objects a batch wrote, by kind (SR, SC, PM, SEG), read back with pydicom."""
    kinds: dict[str, list[pydicom.Dataset]] = {}
    for path in sorted(out.rglob("*.dcm")):
        dataset = pydicom.dcmread(path)
        kind = SOP_KINDS.get(str(dataset.SOPClassUID), str(dataset.SOPClassUID))
        kinds.setdefault(kind, []).append(dataset)
    return kinds


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
    grid = driver.find_element(By.CSS_SELECTOR, "[data-cy='viewport-grid']")
    box = grid.rect
    ratio = driver.execute_script("return window.devicePixelRatio") or 1
    image = Image.open(io.BytesIO(driver.get_screenshot_as_png())).convert("RGB")
    left, top = int(box["x"] * ratio), int(box["y"] * ratio)
    crop = image.crop(
        (left, top, left + int(box["width"] * ratio), top + int(box["height"] * ratio))
    )
    return np.asarray(crop).astype(np.int16)


def coloured(pixels: np.ndarray) -> int:
    """How many pixels are clearly not grey: an overlay's colour map on a grey CT."""
    return int((pixels.max(axis=-1) - pixels.min(axis=-1) > 60).sum())


def wait_rendered(driver, colour: bool, what: str) -> np.ndarray:
    """Wait until the viewport shows an image (grey structure, or colour for a heatmap)."""
    deadline = time.monotonic() + SLOW
    while True:
        pixels = viewport_pixels(driver)
        spread = float(pixels.std())
        colourful = coloured(pixels)
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


def segment_instances(seg: pydicom.Dataset, ct_files: list[Path]) -> set[int]:
    """InstanceNumbers of the CT slices that the SEG's frames lie on (from its references)."""
    numbers = {
        str(ds.SOPInstanceUID): int(ds.InstanceNumber)
        for ds in (pydicom.dcmread(p, stop_before_pixels=True) for p in ct_files)
    }
    found = set()
    for frame in seg.PerFrameFunctionalGroupsSequence:
        for derivation in frame.DerivationImageSequence:
            for source in derivation.SourceImageSequence:
                found.add(numbers[str(source.ReferencedSOPInstanceUID)])
    return found


def check_sr(driver, sr: pydicom.Dataset, artifacts: Path) -> None:
    """The SR's finding and probabilities, as OHIF shows them: its Tag Browser (OHIF's SR
    viewport draws only measurement groups with image coordinates; see docs/viewer.md)."""
    finding, probabilities = sr_values(sr)
    assert finding and probabilities, "the SR has no finding or probabilities"
    open_tag_browser(driver, str(sr.SeriesDescription))
    for name in probabilities:
        assert name in search_tags(driver, name)
    lines = search_tags(driver, "NumericValue")
    shown = [float(line) for line in lines if re.fullmatch(r"-?\d+(\.\d+)?(e-?\d+)?", line)]
    for name, value in probabilities.items():  # OHIF prints the DICOM JSON number
        assert any(abs(number - float(value)) < 1e-9 for number in shown), (name, shown)
    driver.save_screenshot(str(artifacts / "ohif_sr_probabilities.png"))
    assert "Finding" in search_tags(driver, "Finding")
    assert finding in search_tags(driver, finding)  # the finding's coded value and meaning
    driver.find_element(By.XPATH, "//*[@role='dialog']//button[normalize-space()='Close']").click()


def check_secondary_capture(driver, sc: pydicom.Dataset, artifacts: Path) -> None:
    """An RGB heatmap screenshot opens as its own series, in colour."""
    ActionChains(driver).double_click(thumbnail(driver, str(sc.SeriesDescription))).perform()
    wait_rendered(driver, colour=True, what="heatmap secondary capture")
    driver.save_screenshot(str(artifacts / "ohif_heatmap_sc.png"))


def check_parametric_map(driver, pm: pydicom.Dataset, ct: pydicom.Dataset, artifacts: Path):
    """The map opens fused over its source CT: colour over the CT's own slices."""
    ActionChains(driver).double_click(thumbnail(driver, str(pm.SeriesDescription))).perform()
    wait_rendered(driver, colour=True, what="parametric map overlay")
    text = page_text(driver)
    assert str(ct.SeriesDescription) in text  # the viewport is still the source series
    slices = int(re.search(r"I:\s*\d+ \(\d+/(\d+)\)", text).group(1))
    assert slices == int(pm.NumberOfFrames)  # scrolled through the CT's slices, map on each
    driver.save_screenshot(str(artifacts / "ohif_parametric_map.png"))


def check_segmentation(driver, seg: pydicom.Dataset, on_slices: set[int], artifacts: Path):
    """The SEG loads over the CT: its segments in the panel, OHIF on a slice it covers, red."""
    ActionChains(driver).double_click(thumbnail(driver, str(seg.SeriesDescription))).perform()
    yes = WebDriverWait(driver, SLOW).until(
        lambda d: [
            b
            for b in d.find_elements(By.XPATH, "//button[normalize-space()='Yes']")
            if b.is_displayed()
        ]
    )
    yes[0].click()  # "Do you want to open this Segmentation?"
    driver.find_element(By.CSS_SELECTOR, "[data-cy='panelSegmentation-btn']").click()
    for segment in seg.SegmentSequence:
        wait_text(driver, re.escape(str(segment.SegmentLabel)), f"segment {segment.SegmentLabel}")
    instance = int(wait_text(driver, r"I:\s*(\d+) \(\d+/\d+\)", "the slice counter").group(1))
    assert instance in on_slices, (instance, sorted(on_slices))
    deadline = time.monotonic() + SLOW
    while True:  # the segment's fill (in its colour, over the grey CT) is drawn on that slice
        filled = coloured(viewport_pixels(driver))
        if filled > 200:
            break
        assert time.monotonic() < deadline, f"no segment drawn on slice {instance} ({filled} px)"
        time.sleep(2)
    driver.save_screenshot(str(artifacts / "ohif_segmentation.png"))


def open_study(driver, url: str, study: dict) -> None:
    driver.get(f"{url}/viewer?StudyInstanceUIDs={study['uid']}")
    n_slices = wait_text(driver, r"I:\s*\d+ \(\d+/([1-9]\d*)\)", "the CT slice counter").group(1)
    assert int(n_slices) == len(study["ct_files"])
    dismiss_tour(driver)


def test_ohif_shows_the_study_the_ct_and_medplug_results(
    ohif_dist: Path, study: dict, browser, artifacts: Path
) -> None:
    outputs = study["outputs"]
    assert "sr" in outputs and ("sc" in outputs or "pm" in outputs), sorted(outputs)
    with serve_ohif(ohif_dist, study["orthanc"].dicomweb) as ohif:
        # The study list: the patient, and CT with medplug's series in the study.
        browser.get(ohif.url + "/")
        name = str(study["ct"].PatientName).split("^")[-1]
        wait_text(browser, rf"{name}[\s\S]*CT\\.*SR", "the study in the study list")
        browser.save_screenshot(str(artifacts / "ohif_study_list.png"))

        # The viewer opens the CT series (all its slices) with medplug's series beside it.
        open_study(browser, ohif.url, study)
        thumbnail(browser, str(study["ct"].SeriesDescription))
        for datasets in outputs.values():
            thumbnail(browser, str(datasets[0].SeriesDescription))
        wait_rendered(browser, colour=False, what="CT series")
        browser.save_screenshot(str(artifacts / "ohif_ct.png"))

        check_sr(browser, outputs["sr"][0], artifacts)
        for sc in outputs.get("sc", []):
            check_secondary_capture(browser, sc, artifacts)
        for pm in outputs.get("pm", []):
            open_study(browser, ohif.url, study)  # a fresh viewport: one overlay at a time
            check_parametric_map(browser, pm, study["ct"], artifacts)
        for seg in outputs.get("seg", []):
            open_study(browser, ohif.url, study)
            check_segmentation(browser, seg, segment_instances(seg, study["ct_files"]), artifacts)


def test_the_served_ohif_overlays_a_seg_and_a_parametric_map(
    ohif_dist: Path, study: dict, browser, artifacts: Path, tmp_path: Path
) -> None:
    """The serving path (proxy, app-config) carries what OHIF needs for SEG and PM overlays.

    The objects are made here with highdicom over the study's CT, not by medplug's
    writers: this checks the viewer set-up, the test above checks medplug's own output.
    """
    seg, pm = highdicom_seg_and_pm(study["ct_files"], tmp_path)
    study["orthanc"].upload([seg, pm])
    seg_ds, pm_ds = pydicom.dcmread(seg), pydicom.dcmread(pm)
    shots = artifacts / "highdicom"
    shots.mkdir(exist_ok=True)
    with serve_ohif(ohif_dist, study["orthanc"].dicomweb) as ohif:
        open_study(browser, ohif.url, study)
        check_parametric_map(browser, pm_ds, study["ct"], shots)
        open_study(browser, ohif.url, study)  # a fresh viewport: one overlay at a time
        check_segmentation(browser, seg_ds, segment_instances(seg_ds, study["ct_files"]), shots)


def highdicom_seg_and_pm(ct_files: list[Path], folder: Path) -> tuple[Path, Path]:
    """A sphere as a BINARY SEG and a Gaussian blob as a Parametric Map, on the CT's grid."""
    import highdicom as hd
    from pydicom.sr.codedict import codes
    from pydicom.uid import generate_uid

    source = sorted(
        (pydicom.dcmread(p) for p in ct_files), key=lambda ds: float(ds.ImagePositionPatient[2])
    )
    n, rows, columns = len(source), int(source[0].Rows), int(source[0].Columns)
    z, y, x = np.indices((n, rows, columns))
    distance2 = 6 * (z - n // 2) ** 2 + (y - rows // 2) ** 2 + (x - columns // 3) ** 2
    common = dict(
        instance_number=1, manufacturer="medplug-test", manufacturer_model_name="viewer-test",
        software_versions="1", device_serial_number="1",
    )  # fmt: skip
    algorithm = hd.AlgorithmIdentificationSequence(
        name="viewer-test", version="1", family=codes.DCM.ArtificialIntelligence
    )
    seg = hd.seg.Segmentation(
        source_images=source,
        pixel_array=(distance2 < 12**2).astype(np.uint8),
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=[
            hd.seg.SegmentDescription(
                segment_number=1,
                segment_label="test sphere",
                segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
                segmented_property_type=codes.SCT.Lesion,
                algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
                algorithm_identification=algorithm,
            )
        ],
        series_instance_uid=generate_uid(),
        series_number=9990,
        sop_instance_uid=generate_uid(),
        series_description="test SEG (highdicom)",
        **common,
    )
    mapping = hd.pm.RealWorldValueMapping(
        lut_label="relevance", lut_explanation="test map (0-1)",
        unit=hd.sr.CodedConcept("1", "UCUM", "no units"), value_range=(0.0, 1.0),
        slope=1.0, intercept=0.0,
    )  # fmt: skip
    pm = hd.pm.ParametricMap(
        source_images=source,
        pixel_array=np.exp(-distance2 / (2 * 15.0**2)).astype(np.float32),
        series_instance_uid=generate_uid(),
        series_number=9991,
        sop_instance_uid=generate_uid(),
        contains_recognizable_visual_features=False,
        real_world_value_mappings=[mapping],
        voi_lut_transformations=[hd.VOILUTTransformation(window_center=0.5, window_width=1.0)],
        series_description="test PM (highdicom)",
        **common,
    )
    seg.save_as(folder / "seg.dcm")
    pm.save_as(folder / "pm.dcm")
    return folder / "seg.dcm", folder / "pm.dcm"
