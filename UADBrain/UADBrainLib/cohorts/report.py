"""``cohort_report.html``: the page a study lead opens first — one self-contained file.

The distributions of volume scores and flagged volumes, the failures with their reasons, and the
scans most anomalous first, each with its overview picture as a thumbnail (the first
``MAX_THUMBNAILS``; every scan is in the table).
"""

from __future__ import annotations

import base64
import html
import io
import math
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from ..io import write_text_atomically

MAX_THUMBNAILS = 200
TABLE_COLUMNS = {"volume_score": "volume score", "volume_percentile_among_healthy": "above healthy calibration brains",
                 "flagged_volume_ml": "flagged mL", "lesion_count": "lesions", "age": "age"}
THUMBNAIL_WIDTH = 720  # pixels: the overview is 3 slices and a histogram side by side

STYLE = """
body{font-family:system-ui,sans-serif;margin:24px;color:#222}
table{border-collapse:collapse;font-size:13px}td,th{border-bottom:1px solid #ddd;padding:4px 8px;text-align:left}
th{background:#f3f3f3}td.n{text-align:right;font-variant-numeric:tabular-nums}
.failed{color:#a00}.figure img{max-width:100%}.scan{margin:16px 0}.scan img{width:720px;max-width:100%}
"""


def _number(value) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _png_data(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _distributions(rows: list[dict]) -> bytes | None:
    """Histograms of the volume score and the flagged volume over the scans that ran."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scores = [v for v in (_number(r.get("volume_score")) for r in rows) if v is not None]
    volumes = [v for v in (_number(r.get("flagged_volume_ml")) for r in rows) if v is not None]
    if not scores:
        return None
    figure, axes = plt.subplots(1, 2, figsize=(10, 3.2))
    axes[0].hist(scores, bins=min(50, max(5, len(scores) // 2)), color="0.35")
    axes[0].set_xlabel("volume score (mean score of the most anomalous 1 mL)")
    axes[1].hist(volumes, bins=min(50, max(5, len(volumes) // 2)), color="0.35")
    axes[1].set_xlabel("flagged volume (mL)")
    for axis in axes:
        axis.set_ylabel("scans")
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=80)
    plt.close(figure)
    return buffer.getvalue()


def _thumbnail(path: Path) -> str | None:
    """The overview picture scaled to ``THUMBNAIL_WIDTH``, as a data URI; None when it is missing."""
    from PIL import Image

    try:
        with Image.open(path) as picture:
            picture.thumbnail((THUMBNAIL_WIDTH, THUMBNAIL_WIDTH))
            buffer = io.BytesIO()
            picture.convert("RGB").save(buffer, format="PNG", optimize=True)
    except OSError:
        return None
    return _png_data(buffer.getvalue())


def write_cohort_report(rows: list[dict], path, overview_of: Callable[[str], Path], title: str) -> None:
    """Write the report of a cohort's summary rows (``runner.SUMMARY_COLUMNS``) to ``path``."""
    path = Path(path)
    ran = [r for r in rows if r["status"] in ("done", "reused")]
    failed = [r for r in rows if r["status"] == "failed"]
    ranked = sorted(ran, key=lambda r: -score if (score := _number(r.get("volume_score"))) is not None else math.inf)
    escape = html.escape
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{escape(title)}</title>"
             f"<style>{STYLE}</style></head><body><h1>{escape(title)}</h1>",
             f"<p>{len(rows)} scans: {len(ran)} with results, {len(failed)} failed. Written "
             f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC.</p>"]
    distributions = _distributions(ran)
    if distributions:
        parts.append(f"<div class='figure'><img alt='distributions' src='{_png_data(distributions)}'></div>")
    if failed:
        parts.append("<h2 class='failed'>Failures</h2><table><tr><th>scan</th><th>reason</th></tr>")
        parts += [f"<tr><td>{escape(r['id'])}</td><td class='failed'>{escape(str(r.get('error')))}</td></tr>"
                  for r in failed]
        parts.append("</table>")
    parts.append("<h2>Scans, most anomalous first</h2><table><tr><th>#</th><th>scan</th>"
                 + "".join(f"<th>{label}</th>" for label in TABLE_COLUMNS.values()) + "</tr>")
    for rank, row in enumerate(ranked, start=1):
        cells = "".join(f"<td class='n'>{_percent(row.get(c)) if c.endswith('healthy') else _cell(row.get(c))}</td>"
                        for c in TABLE_COLUMNS)
        parts.append(f"<tr><td>{rank}</td><td><a href='#scan-{escape(row['id'])}'>{escape(row['id'])}</a></td>"
                     f"{cells}</tr>")
    parts.append("</table>")
    shown = ranked[:MAX_THUMBNAILS]
    parts.append(f"<h2>Overviews</h2><p>The {len(shown)} most anomalous scans"
                 f"{f' (of {len(ranked)})' if len(ranked) > len(shown) else ''}.</p>")
    for rank, row in enumerate(shown, start=1):
        picture = _thumbnail(overview_of(row["id"]))
        image = f"<img alt='overview of {escape(row['id'])}' src='{picture}'>" if picture else "<p>no overview</p>"
        parts.append(f"<div class='scan' id='scan-{escape(row['id'])}'><h3>{rank}. {escape(row['id'])} — "
                     f"volume score {_cell(row.get('volume_score'))}, {_cell(row.get('flagged_volume_ml'))} mL, "
                     f"{_cell(row.get('lesion_count'))} lesion(s)</h3>{image}</div>")
    parts.append("</body></html>\n")
    write_text_atomically(path, "\n".join(parts))


def _percent(share) -> str:
    """A share of the healthy calibration brains (0–1) as a percentage; blank for a model without."""
    number = _number(share)
    return "" if number is None else f"{100 * number:.0f} %"


def _cell(value) -> str:
    number = _number(value)
    if number is None:
        return "" if value in (None, "") else html.escape(str(value))
    return f"{number:.3g}" if not float(number).is_integer() else f"{int(number)}"
