"""Take the README picture of a ``cohort_report.html``: the top of the page in Debian's chromium.

    uadbrain detect --batch COHORT --out OUT --workers 2
    python docs/tools/cohort_report_screenshot.py --report OUT/cohort_report.html \\
        --out Resources/Screenshots/cohort_report.png
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--report", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--height", type=int, default=1400, help="pixels of the page shown")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=shutil.which("chromium"),
                                             args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport={"width": 1100, "height": args.height})
        page.goto(args.report.resolve().as_uri())
        page.screenshot(path=str(args.out))
        browser.close()


if __name__ == "__main__":
    main()
