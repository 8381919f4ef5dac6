"""Put the tables of several ``exactps bench exactness --out OUT`` runs side by side (one column per task):

    python scripts/exactness_tables.py OUT1.json OUT2.json ... [--plot FIG.png] [--paired] > tables.md

Rows keep each run's order; the header states each run's sample counts; --plot draws error vs cost.
``OUT.json:LABEL`` renames that run's denoisers (e.g. ``learned-eps5000.json:"learned, 5000 steps"``);
--paired prints one SW2 / floor table with a column per (task, denoisers) instead.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from exactps.exactbench.report import format_paired, format_rows, plot_rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", metavar="OUT.json[:LABEL]")
    p.add_argument("--plot", type=Path, default=None, help="also draw error vs cost")
    p.add_argument("--paired", action="store_true", help="one table, a column per (task, denoisers)")
    args = p.parse_args()
    paths, plot, paired = args.runs, args.plot, args.paired
    rows, headers = [], []
    for spec in paths:
        path, _, label = spec.partition(".json:")
        path = path if path.endswith(".json") else path + ".json"
        data = json.loads(open(path).read())
        if label:
            for r in data["summary"]:
                r["denoisers"] = label if r["denoisers"] != "oracle" else r["denoisers"]
        cfg = data["config"]
        tasks = ",".join(dict.fromkeys(r["task"] for r in data["summary"]))
        headers.append(
            f"{tasks}: n = {cfg['measurements']} measurements x {cfg['runs']} runs, "
            f"{cfg['n_samples']} samples per run, floor over {cfg['n_refs']} exact pairs"
        )
        rows += data["summary"]
    print("\n".join(headers) + "\n\n" + format_paired(rows) if paired else format_rows(rows, "\n".join(headers)))
    if plot is not None:
        plot_rows(rows, plot)


if __name__ == "__main__":
    main()
