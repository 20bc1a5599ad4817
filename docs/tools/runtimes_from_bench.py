"""Maintainers: write each bundle's ``expected_runtime_s`` (what ``uadbrain models`` shows) from a
``uadbrain bench`` run, so the listing and the README quote the same measurement.

The figure is the bench's seconds per volume with the model loaded (``batch_s_per_volume``, else
the cold ``detect_s``) on its real evaluation case (a 1 mm skull-stripped scan, FLAIR unless the
model needs more), recorded with what was measured:

    uadbrain bench --out bench && python docs/tools/runtimes_from_bench.py bench/bench.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "UADBrain"))

from UADBrainLib.bundle import find_bundle, write_metadata  # noqa: E402


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        sys.exit("usage: python docs/tools/runtimes_from_bench.py BENCH.json")
    document = json.loads(Path(argv[0]).read_text(encoding="utf-8"))
    for row in document["runs"]:
        if "error" in row or row["case"].startswith("synthetic") or row["device"] != "cpu":
            continue
        seconds = row.get("batch_s_per_volume") or row["detect_s"]
        bundle = find_bundle(row["model"])
        metadata = dict(bundle.metadata)
        metadata["expected_runtime_s"] = {
            **metadata.get("expected_runtime_s", {}), "cpu": round(seconds, 1),
            "measured": f"uadbrain bench {document['date'][:10]}: {row['case']} ({'+'.join(row['contrasts'])}, "
                        f"{'x'.join(f'{s:g}' for s in row['spacing_mm'])} mm), model loaded, "
                        f"{document['machine']['cpu_count']} CPU cores"}
        write_metadata(bundle.path, metadata)
        print(f"{bundle.name}: {seconds:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
