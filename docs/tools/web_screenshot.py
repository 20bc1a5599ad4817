"""Take the README screenshot of the web app (``uadbrain serve``) on a real case.

Starts the app headless on a free 127.0.0.1 port, drives Debian's chromium with Playwright
(upload the FLAIR, model ``auto``, device ``cpu``, Run, click the first lesion), saves a
PNG of the whole page at the run's threshold, then times threshold slider → lesion summary /
slice-view overlay updates.
Stops the server and the browser when done.

Run from the repository root, in the project venv (needs the web extra, playwright and chromium)::

    python docs/tools/web_screenshot.py --case PATH/flair.nii.gz --out Resources/Screenshots/web_app_ms.png
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from io import BytesIO
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
# an MS case: the Lesjak 2017 data are CC BY, so a picture of them may be shown with a citation
DEFAULT_CASE = REPO.parent / "shared" / "data" / "eval" / "ms_lesjak2017" / "patient19" / "flair.nii.gz"
DEFAULT_OUT = REPO / "Resources" / "Screenshots" / "web_app_ms.png"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
UI_TIMEOUT_MS = 60_000


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--case", type=Path, default=DEFAULT_CASE, help="FLAIR volume to upload (default: %(default)s)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="PNG to write (default: %(default)s)")
    parser.add_argument("--model", default="auto", help="model to pick (default: %(default)s)")
    parser.add_argument("--device", default="cpu", help="device to pick (default: %(default)s)")
    parser.add_argument("--width", type=int, default=1600, help="viewport width (default: %(default)s)")
    parser.add_argument("--height", type=int, default=1000, help="viewport height (default: %(default)s)")
    parser.add_argument("--max-kb", type=int, default=600, help="shrink the PNG until it is under this size")
    parser.add_argument("--timing-repeats", type=int, default=5, help="slider moves to time (0: skip)")
    parser.add_argument("--run-timeout", type=int, default=600, help="seconds to wait for the run")
    parser.add_argument("--chromium", default=shutil.which("chromium") or "/usr/bin/chromium")
    parser.add_argument("--log", type=Path, default=None, help="server log (default: a temporary file)")
    return parser.parse_args(argv)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """``python -m UADBrainWeb`` in a subprocess, rendering off screen with EGL."""

    def __init__(self, log_path: Path, start_timeout_s: float = 180):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self.log_path = log_path
        self.start_timeout_s = start_timeout_s
        self.cwd = tempfile.TemporaryDirectory(prefix="uadbrain-web-cwd-")
        self.process = None

    def __enter__(self) -> "Server":
        env = {**os.environ,
               "PYTHONPATH": os.pathsep.join([str(REPO / "UADBrain"), os.environ.get("PYTHONPATH", "")])}
        env.setdefault("VTK_DEFAULT_OPENGL_WINDOW", "vtkEGLRenderWindow")
        with open(self.log_path, "w", encoding="utf-8") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "UADBrainWeb", "--host", "127.0.0.1", "--port", str(self.port)],
                cwd=self.cwd.name, env=env, stdout=log, stderr=subprocess.STDOUT,
            )
        try:
            self._wait_until_serving()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def _wait_until_serving(self) -> None:
        deadline = time.monotonic() + self.start_timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the web app exited ({self.process.returncode}):\n"
                                   f"{self.log_path.read_text(encoding='utf-8')[-3000:]}")
            try:
                with urllib.request.urlopen(self.url, timeout=2) as response:
                    if response.status == 200:
                        return
            except OSError:
                time.sleep(0.5)
        raise RuntimeError(f"the web app did not answer on {self.url} within {self.start_timeout_s} s")

    def __exit__(self, *_exc) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.cwd.cleanup()


# ----- page helpers -----

def pick(page, label: str, value: str) -> None:
    """Choose ``value`` in the Vuetify select labelled ``label``."""
    page.locator(".v-select").filter(has=page.locator("label", has_text=label)).first.click()
    page.get_by_role("option", name=value, exact=True).click()
    page.keyboard.press("Escape")


def summary_text(page) -> str:
    return page.get_by_test_id("summary").inner_text()


def watch_view_images(page) -> None:
    """Record (in page time) every new frame the server pushes into a slice view."""
    page.evaluate("""() => {
        window.__viewChanges = [];
        if (window.__viewObserver) window.__viewObserver.disconnect();
        window.__viewObserver = new MutationObserver(() => window.__viewChanges.push(performance.now()));
        document.querySelectorAll('[data-testid=views] img').forEach(
            (img) => window.__viewObserver.observe(img, { attributes: true, attributeFilter: ['src'] }));
    }""")


def wait_views_quiet(page, quiet_ms: int = 1500, timeout_ms: int = 30_000) -> None:
    """Wait until no slice view has received a new frame for ``quiet_ms``."""
    watch_view_images(page)
    page.evaluate("window.__quietSince = performance.now()")
    page.wait_for_function(
        f"performance.now() - Math.max(window.__quietSince, ...window.__viewChanges) > {quiet_ms}",
        polling=100, timeout=timeout_ms)


def time_slider(page, repeats: int) -> tuple[list[float], list[float]]:
    """Move the threshold slider one page step ``repeats`` times, alternately up and down; return
    slider → lesion summary and slider → last new view frame times in ms."""
    thumb = page.locator('[data-testid="threshold"] [role="slider"]')
    summary_ms, overlay_ms = [], []
    for index in range(repeats):
        before = summary_text(page)
        watch_view_images(page)
        thumb.focus()
        page.evaluate("window.__sliderMovedAt = performance.now()")
        page.keyboard.press("PageUp" if index % 2 == 0 else "PageDown")
        page.wait_for_function("(before) => document.querySelector('[data-testid=summary]').innerText !== before",
                               arg=before, polling="raf")
        summary_ms.append(page.evaluate("performance.now() - window.__sliderMovedAt"))
        page.wait_for_function("window.__viewChanges.some((t) => t > window.__sliderMovedAt)")
        page.wait_for_function("performance.now() - Math.max(...window.__viewChanges) > 1000", polling=100)
        overlay_ms.append(page.evaluate("Math.max(...window.__viewChanges) - window.__sliderMovedAt"))
        print(f"  move {index + 1}: summary {summary_ms[-1]:.0f} ms, last view frame {overlay_ms[-1]:.0f} ms "
              f"({summary_text(page)})", flush=True)
    return summary_ms, overlay_ms


def save_png(png: bytes, out: Path, max_kb: int) -> None:
    """Write ``png``; if it is over ``max_kb``, downscale to 1400 px wide, then quantise colours."""
    from PIL import Image

    out.parent.mkdir(parents=True, exist_ok=True)
    if len(png) <= max_kb * 1024:
        out.write_bytes(png)
        return
    image = Image.open(BytesIO(png)).convert("RGB")
    if image.width > 1400:
        image = image.resize((1400, round(image.height * 1400 / image.width)), Image.LANCZOS)
    image.save(out, optimize=True)
    if out.stat().st_size > max_kb * 1024:
        image.quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(out, optimize=True)


def drive(url: str, args: argparse.Namespace) -> None:
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=UI_TIMEOUT_MS)
    with tempfile.TemporaryDirectory(prefix="uadbrain-chromium-") as profile, sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            profile, executable_path=args.chromium, args=CHROMIUM_ARGS, headless=True,
            viewport={"width": args.width, "height": args.height},
        )
        try:
            page = context.new_page()
            page.set_default_timeout(UI_TIMEOUT_MS)
            page.goto(url)
            expect(page.get_by_test_id("load-example")).to_be_visible()

            print(f"uploading {args.case}", flush=True)
            page.get_by_test_id("upload").locator("input[type=file]").set_input_files(str(args.case))
            contrast = page.get_by_test_id(f"contrast-{args.case.name}")
            expect(contrast).to_be_visible()
            if "flair" not in contrast.inner_text().lower():
                contrast.click()
                page.get_by_role("option", name="flair", exact=True).click()
            expect(contrast).to_contain_text("flair")
            pick(page, "Model", args.model)
            pick(page, "Device", args.device)

            print("running", flush=True)
            started = time.monotonic()
            page.get_by_test_id("run").click()
            stage = page.get_by_test_id("stage")
            page.wait_for_function(
                "['done', 'failed', 'cancelled'].includes(document.querySelector('[data-testid=stage]').innerText.trim())",
                timeout=args.run_timeout * 1000, polling=250)
            if stage.inner_text().strip() != "done":
                raise RuntimeError(f"the run ended '{stage.inner_text()}': "
                                   f"{page.get_by_test_id('error').all_inner_texts()}")
            expect(page.get_by_test_id("summary")).to_contain_text("flagged")
            print(f"run done in {time.monotonic() - started:.1f} s: {summary_text(page)}", flush=True)
            wait_views_quiet(page)

            rows = page.locator('[data-testid="lesion-row"]')
            if rows.count():
                rows.first.click()
                wait_views_quiet(page)
            page.mouse.move(0, 0)  # no hover highlight in the picture
            save_png(page.screenshot(full_page=True), args.out, args.max_kb)
            print(f"wrote {args.out} ({args.out.stat().st_size / 1024:.0f} KB)", flush=True)

            if args.timing_repeats:
                print("timing the threshold slider", flush=True)
                summary_ms, overlay_ms = time_slider(page, args.timing_repeats)
                print(f"slider → lesion summary: median {statistics.median(summary_ms):.0f} ms "
                      f"(all {', '.join(f'{t:.0f}' for t in summary_ms)})")
                print(f"slider → last new view frame: median {statistics.median(overlay_ms):.0f} ms "
                      f"(all {', '.join(f'{t:.0f}' for t in overlay_ms)})", flush=True)
        finally:
            context.close()


def main(argv=None) -> int:
    args = parse_args(argv)
    if not args.case.is_file():
        sys.exit(f"no such case: {args.case}")
    if not Path(args.chromium).is_file():
        sys.exit(f"chromium not found at {args.chromium} (apt-get install -y chromium)")
    log_path = args.log or Path(tempfile.gettempdir()) / "uadbrain-web-screenshot-server.log"
    with Server(log_path) as server:
        print(f"server on {server.url} (log: {log_path})", flush=True)
        drive(server.url, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
