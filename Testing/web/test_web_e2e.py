"""End-to-end tests of the web front end (``uadbrain serve``) in Debian's headless Chromium.

The app runs in a subprocess on a free 127.0.0.1 port; Playwright drives the system chromium
(never a downloaded browser). Screenshots of every step go to Testing/artifacts/web/.
They skip only when chromium or the web extra is missing.
"""

from __future__ import annotations

import csv
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "Testing" / "artifacts" / "web"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
START_TIMEOUT_S = 120
RUN_TIMEOUT_MS = 300_000
UI_TIMEOUT_MS = 30_000

if not Path(CHROMIUM).is_file():
    pytest.skip("Debian chromium is not installed (apt-get install -y chromium)", allow_module_level=True)
for module in ("playwright", "trame_slicer", "slicer"):
    pytest.importorskip(module, reason=f"the web extra is not installed ({module} missing)")

import SimpleITK as sitk  # noqa: E402
from playwright.sync_api import expect, sync_playwright  # noqa: E402

expect.set_options(timeout=UI_TIMEOUT_MS)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until_serving(url: str, process: subprocess.Popen, log_path: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"the web app exited ({process.returncode}):\n{log_path.read_text(encoding='utf-8')[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    pytest.fail(f"the web app did not answer on {url} within {START_TIMEOUT_S} s")


@pytest.fixture(scope="module")
def app_url(tmp_path_factory):
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    port = free_port()
    log_path = ARTIFACTS / "server.log"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "UADBrain"), os.environ.get("PYTHONPATH", "")])}
    with open(log_path, "w", encoding="utf-8") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "UADBrainWeb", "--host", "127.0.0.1", "--port", str(port)],
            cwd=tmp_path_factory.mktemp("web-cwd"), env=env, stdout=log, stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}/"
    try:
        wait_until_serving(url, process, log_path)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()


@pytest.fixture(scope="module")
def page(app_url, tmp_path_factory):
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")),
            executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True,
            viewport={"width": 1400, "height": 900}, accept_downloads=True,
        )
        page = context.new_page()
        page.set_default_timeout(UI_TIMEOUT_MS)
        page.goto(app_url)
        expect(page.get_by_test_id("load-example")).to_be_visible()
        yield page
        context.close()


def screenshot(page, name: str) -> None:
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"))


def summary_text(page) -> str:
    return page.get_by_test_id("summary").inner_text()


def run_and_wait(page) -> None:
    page.get_by_test_id("run").click()
    stage = page.get_by_test_id("stage")
    expect(stage).to_have_text(re.compile(r"^(done|failed|cancelled)$"), timeout=RUN_TIMEOUT_MS)
    if stage.inner_text() != "done":
        pytest.fail(f"the run ended '{stage.inner_text()}': {page.get_by_test_id('error').all_inner_texts()}")
    expect(page.get_by_test_id("summary")).to_contain_text("flagged")


def shown_lesion_volumes(page) -> list[float]:
    cells = page.locator('[data-testid="lesion-row"] td:nth-child(2)').all_inner_texts()
    return sorted(float(text) for text in cells)


def download(page, kind: str, folder: Path) -> Path:
    with page.expect_download() as info:
        page.get_by_test_id(f"download-{kind}").click()
    path = folder / info.value.suggested_filename
    info.value.save_as(path)
    return path


def assert_same_grid(image: sitk.Image, reference: sitk.Image) -> None:
    assert image.GetSize()[:3] == reference.GetSize()
    np.testing.assert_allclose(image.GetSpacing()[:3], reference.GetSpacing(), atol=1e-4)
    np.testing.assert_allclose(image.GetOrigin()[:3], reference.GetOrigin(), atol=1e-3)
    direction = np.array(image.GetDirection()).reshape(image.GetDimension(), -1)[:3, :3]
    np.testing.assert_allclose(direction, np.array(reference.GetDirection()).reshape(3, 3), atol=1e-5)


@pytest.fixture(scope="module")
def example_result(page):
    page.get_by_test_id("load-example").click()
    expect(page.locator('[data-testid^="contrast-example"]').first).to_be_visible()
    screenshot(page, "01_example_loaded")
    run_and_wait(page)
    screenshot(page, "02_example_result")
    return page


def test_example_run_shows_lesions_and_overlay(example_result):
    page = example_result
    assert page.locator('[data-testid="lesion-row"]').count() >= 1
    assert float(page.get_by_test_id("progress").get_attribute("aria-valuenow")) == pytest.approx(100)
    expect(page.get_by_test_id("error")).to_have_count(0)
    expect(page.get_by_test_id("ran-on")).to_have_text("ran on cpu")  # this machine has no GPU
    # the example loads FLAIR, T1 and T2; the default model scores FLAIR alone and says so
    expect(page.get_by_test_id("warning").first).to_contain_text("t1, t2 not scored")


def test_threshold_slider_updates_lesions_and_overlay(example_result, tmp_path):
    page = example_result
    before_summary, before_view = summary_text(page), view_pixels(page)
    watch_view_images(page)
    thumb = page.locator('[data-testid="threshold"] [role="slider"]')
    thumb.focus()
    page.evaluate("window.__sliderMovedAt = performance.now()")
    page.keyboard.press("PageUp")  # a higher threshold: fewer or smaller lesions
    page.wait_for_function("(before) => document.querySelector('[data-testid=summary]').innerText !== before",
                           arg=before_summary)
    summary_ms = page.evaluate("performance.now() - window.__sliderMovedAt")
    wait_until_views_quiet(page)
    overlay_ms = page.evaluate("Math.max(...window.__viewChanges) - window.__sliderMovedAt")
    print(f"\nslider → lesion summary {summary_ms:.0f} ms, slider → last new view image {overlay_ms:.0f} ms")
    wait_until_settled(page)
    screenshot(page, "03_threshold_raised")
    assert summary_text(page) != before_summary
    assert not np.array_equal(view_pixels(page), before_view), "the views did not change"
    csv_path = download(page, "lesions_csv", tmp_path)
    with open(csv_path, encoding="utf-8") as handle:
        csv_volumes = sorted(round(float(row["volume_ml"]), 3) for row in csv.DictReader(handle))
    assert shown_lesion_volumes(page) == pytest.approx(csv_volumes, abs=1e-3)


def test_clicking_a_lesion_moves_the_slices(example_result):
    page = example_result
    page.keyboard.press("PageDown")  # back to the run's threshold, where the example has lesions
    wait_until_settled(page)
    rows = page.locator('[data-testid="lesion-row"]')
    expect(rows.first).to_be_visible()
    before = view_pixels(page)
    rows.last.click()
    page.wait_for_timeout(1500)
    screenshot(page, "05_jumped_to_lesion")
    assert not np.array_equal(view_pixels(page), before), "the views did not move to the lesion"



def test_fpr_and_erosion_reach_the_engine(example_result):
    """The Tune fields: a new false-positive rate gives a new calibrated threshold; a brain-mask
    erosion changes what is flagged; neither reruns the model."""
    page = example_result
    threshold_before = page.get_by_test_id("threshold-value").inner_text()
    page.locator('[data-testid="fpr"] input').fill("0.0005")
    expect(page.get_by_test_id("threshold-value")).not_to_have_text(threshold_before)
    page.locator('[data-testid="threshold"] [role="slider"]').focus()
    page.keyboard.press("Home")  # the lowest threshold flags voxels up to the brain's rim
    wait_until_settled(page)
    summary_before = summary_text(page)
    page.locator('[data-testid="erosion"] input').fill("6")
    expect(page.get_by_test_id("summary")).not_to_have_text(summary_before)
    wait_until_settled(page)
    screenshot(page, "06_fpr_and_erosion")
    expect(page.get_by_test_id("error")).to_have_count(0)

def test_the_age_reaches_the_engine(example_result):
    """The age field goes with the run: the default model is not conditioned on age and says so."""
    page = example_result
    page.locator('[data-testid="age"] input').fill("70")
    run_and_wait(page)
    expect(page.get_by_test_id("warning").filter(has_text="age not used")).to_have_count(1)
    page.locator('[data-testid="age"] input').fill("")


def test_download_segmentation_has_the_input_geometry(page, tmp_path):
    volume = oblique_example_flair()
    upload_path = tmp_path / "upload_flair.nii.gz"
    sitk.WriteImage(volume, str(upload_path))
    page.get_by_test_id("upload").locator("input[type=file]").set_input_files(str(upload_path))
    expect(page.get_by_test_id("contrast-upload_flair.nii.gz")).to_be_visible()
    remove = page.locator('[data-testid^="remove-example"]')
    for remaining in range(remove.count(), 0, -1):
        remove.first.click()
        expect(remove).to_have_count(remaining - 1)
    run_and_wait(page)
    screenshot(page, "06_uploaded_result")
    for kind in ("segmentation_nrrd", "segmentation_nifti", "anomaly_map"):
        downloaded = sitk.ReadImage(str(download(page, kind, tmp_path)))
        assert_same_grid(downloaded, volume)
    segmentation = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "segmentation.nii.gz")))
    assert segmentation.max() >= 1, "the bright blob was not segmented"


def test_corrupt_upload_shows_a_readable_error_and_the_app_keeps_working(page, tmp_path):
    corrupt = tmp_path / "corrupt.nii.gz"
    corrupt.write_bytes(b"this is not a NIfTI file" * 40)
    page.get_by_test_id("upload").locator("input[type=file]").set_input_files(str(corrupt))
    error = page.get_by_test_id("error")
    expect(error).to_contain_text("Could not read 'corrupt.nii.gz'")
    screenshot(page, "07_corrupt_upload_error")
    assert "Traceback" not in page.content()
    page.get_by_test_id("load-example").click()
    expect(page.locator('[data-testid^="contrast-example"]').first).to_be_visible()
    run_and_wait(page)
    screenshot(page, "08_still_working_after_error")


def test_cancel_stops_a_run(page, tmp_path):
    fine_flair = tmp_path / "fine_flair.nii.gz"  # 1 mm: a run long enough to cancel
    sitk.WriteImage(example_flair_on_grid(spacing=(1.0, 1.0, 1.0)), str(fine_flair))
    page.get_by_test_id("upload").locator("input[type=file]").set_input_files(str(fine_flair))
    remove = page.locator('[data-testid^="remove-"]:not([data-testid="remove-fine_flair.nii.gz"])')
    for remaining in range(remove.count(), 0, -1):
        remove.first.click()
        expect(remove).to_have_count(remaining - 1)
    page.get_by_test_id("run").click()
    started = time.monotonic()
    page.get_by_test_id("cancel").click()
    expect(page.get_by_test_id("stage")).to_have_text("cancelled", timeout=RUN_TIMEOUT_MS)
    print(f"\ncancel took effect {time.monotonic() - started:.1f} s after Run")
    expect(page.get_by_test_id("error")).to_contain_text("cancelled")
    expect(page.get_by_test_id("run")).to_be_enabled()
    expect(page.locator('[data-testid="lesion-row"]')).to_have_count(0)
    screenshot(page, "09_cancelled")


def remove_every_volume(page) -> None:
    remove = page.locator('[data-testid^="remove-"]')
    for remaining in range(remove.count(), 0, -1):
        remove.first.click()
        expect(remove).to_have_count(remaining - 1)


def test_every_subject_runs_in_turn_and_a_broken_one_is_reported(page, tmp_path):
    remove_every_volume(page)
    flair = example_flair_on_grid(spacing=(2.0, 2.0, 2.0))
    empty = sitk.Image(flair.GetSize(), sitk.sitkFloat32)  # a volume with no image in it
    empty.CopyInformation(flair)
    files = {"case1_flair.nii.gz": flair, "case2_flair.nii.gz": empty,
             "case3_flair.nii.gz": example_flair_on_grid(spacing=(2.0, 2.0, 2.0), rotation_deg=10.0)}
    for name, image in files.items():
        sitk.WriteImage(image, str(tmp_path / name))
    page.get_by_test_id("upload").locator("input[type=file]").set_input_files([str(tmp_path / n) for n in files])
    expect(page.locator('[data-testid^="remove-"]')).to_have_count(3)
    page.get_by_test_id("run-sets").click()
    expect(page.get_by_test_id("set-case2")).to_be_visible()
    screenshot(page, "10_every_subject_running")
    expect(page.get_by_test_id("stage")).to_have_text("done: 2 of 3 sets ran, 1 failed", timeout=RUN_TIMEOUT_MS)
    expect(page.get_by_test_id("set-case1")).to_contain_text("lesions")
    expect(page.get_by_test_id("set-case2")).to_contain_text("failed — ")
    expect(page.get_by_test_id("set-case3")).to_contain_text("lesions")
    expect(page.get_by_test_id("show-case2")).to_have_count(0)
    expect(page.get_by_test_id("summary")).to_contain_text("flagged")  # the first subject is shown
    first = summary_text(page)
    page.get_by_test_id("show-case3").click()
    expect(page.get_by_test_id("summary")).not_to_have_text(first)
    expect(page.get_by_test_id("ran-on")).to_have_text("ran on cpu")
    screenshot(page, "11_every_subject_done")

    page.get_by_test_id("run-sets").click()  # again, and cancelled while the first subject runs
    expect(page.get_by_test_id("cancel")).to_be_enabled()
    page.get_by_test_id("cancel").click()
    expect(page.get_by_test_id("stage")).to_have_text(re.compile(r"^cancelled: \d of 3 sets ran"),
                                                      timeout=RUN_TIMEOUT_MS)
    expect(page.get_by_test_id("set-case3")).to_contain_text("skipped")
    expect(page.get_by_test_id("run-sets")).to_be_enabled()


def test_a_volume_moves_to_another_subject_by_its_subject_field(page, tmp_path):
    remove_every_volume(page)
    flair = example_flair_on_grid(spacing=(2.0, 2.0, 2.0))
    for name in ("case1_flair.nii.gz", "case3_flair.nii.gz"):
        sitk.WriteImage(flair, str(tmp_path / name))
    page.get_by_test_id("upload").locator("input[type=file]").set_input_files(
        [str(tmp_path / "case1_flair.nii.gz"), str(tmp_path / "case3_flair.nii.gz")])
    subject = page.get_by_test_id("subject-case3_flair.nii.gz").locator("input")
    expect(subject).to_have_value("case3")  # read from the file name
    subject.fill("case1")
    subject.press("Enter")
    page.get_by_test_id("run-sets").click()  # one subject now, with two FLAIRs: reported, nothing run
    expect(page.get_by_test_id("stage")).to_contain_text("1 failed", timeout=RUN_TIMEOUT_MS)
    expect(page.get_by_test_id("set-case1")).to_contain_text("give one of them another subject")
    expect(page.get_by_test_id("set-case3")).to_have_count(0)
    subject.fill("")
    subject.press("Enter")
    expect(subject).to_have_value("case3")  # emptied: the subject the name states again


# ----- helpers that read the page -----

def view_pixels(page) -> np.ndarray:
    from io import BytesIO

    from PIL import Image

    png = page.get_by_test_id("views").screenshot()
    return np.asarray(Image.open(BytesIO(png)).convert("RGB"))


def watch_view_images(page) -> None:
    """Record (in page time) every new frame the server pushes into a slice view."""
    page.evaluate("""() => {
        window.__viewChanges = [];
        const observer = new MutationObserver(() => window.__viewChanges.push(performance.now()));
        document.querySelectorAll('[data-testid=views] img').forEach(
            (img) => observer.observe(img, { attributes: true, attributeFilter: ['src'] }));
    }""")


def wait_until_views_quiet(page, quiet_ms: int = 1000) -> None:
    """Wait until the views have received no new frame for ``quiet_ms`` (after at least one)."""
    page.wait_for_function("window.__viewChanges.some((t) => t > window.__sliderMovedAt)")
    page.wait_for_function(f"performance.now() - Math.max(...window.__viewChanges) > {quiet_ms}",
                           polling=100)


def wait_until_settled(page, quiet_ms: int = 1000) -> None:
    """Wait until the summary has not changed for ``quiet_ms``."""
    last, since = summary_text(page), time.monotonic()
    while time.monotonic() - since < quiet_ms / 1000:
        page.wait_for_timeout(100)
        current = summary_text(page)
        if current != last:
            last, since = current, time.monotonic()


def oblique_example_flair() -> sitk.Image:
    """The bundled example's FLAIR on an oblique, anisotropic grid."""
    return example_flair_on_grid(spacing=(1.8, 2.2, 2.5), rotation_deg=12)


def example_flair_on_grid(spacing, rotation_deg: float = 0.0) -> sitk.Image:
    """The bundled example's FLAIR resampled onto a grid of this spacing, turned about S."""
    from UADBrainLib.synthesis.example import make_example

    flair = make_example()["flair"]
    rotation = sitk.Euler3DTransform()
    rotation.SetRotation(0.0, 0.0, np.deg2rad(rotation_deg))
    direction = np.array(rotation.GetMatrix()).reshape(3, 3)
    spacing = np.array(spacing)
    extent = np.array(flair.GetSize()) * np.array(flair.GetSpacing())
    size = np.ceil(extent * 1.15 / spacing).astype(int)
    centre = np.array(flair.TransformContinuousIndexToPhysicalPoint((np.array(flair.GetSize()) - 1) / 2))
    origin = centre - direction @ (spacing * (size - 1) / 2)
    return sitk.Resample(flair, [int(n) for n in size], sitk.Transform(), sitk.sitkLinear, origin.tolist(),
                         spacing.tolist(), direction.flatten().tolist(), 0.0, sitk.sitkFloat32)


def test_an_uploaded_files_contrast_is_read_from_its_name_as_subjects_are_grouped():
    from UADBrainWeb.session import guess_contrast

    names = {"case2_FLAIR.nii.gz": "flair", "sub-01_T1w.nii.gz": "t1", "T1 POST GAD.nrrd": "t1c",
             "AX T2 FLAIR.nii.gz": "flair", "sub-01_ce-gd_T1w.nii.gz": "t1c",
             "flair2.nii.gz": "flair", "brats_t1ce.nii.gz": "t1c", "T2_TSE.nii.gz": "t2"}  # glued names too
    assert {name: guess_contrast(name, set()) for name in names} == names
    assert guess_contrast("scan.nii.gz", {"flair"}) == "t1"  # none stated: the first contrast not taken
