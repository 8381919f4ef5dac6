"""Put the tables of several ``exactps bench exactness --out OUT`` runs side by side (one column per task):

    python scripts/exactness_tables.py OUT1.json OUT2.json ... > tables.md

Rows keep each run's order; the header states each run's sample counts.
"""

from __future__ import annotations

import json
import sys

from exactps.exactbench.report import format_rows


def main(paths: list[str]) -> None:
    rows, headers = [], []
    for path in paths:
        data = json.loads(open(path).read())
        cfg = data["config"]
        tasks = ",".join(dict.fromkeys(r["task"] for r in data["summary"]))
        headers.append(
            f"{tasks}: n = {cfg['measurements']} measurements x {cfg['runs']} runs, "
            f"{cfg['n_samples']} samples per run, floor over {cfg['n_refs']} exact pairs"
        )
        rows += data["summary"]
    print(format_rows(rows, "\n".join(headers)))


if __name__ == "__main__":
    main(sys.argv[1:])
