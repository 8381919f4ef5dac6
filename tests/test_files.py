"""Result files: atomic writes, refusal to overwrite, CSV/JSON tables."""

import csv
import json
import os

import pytest

from exactps.files import atomic_write, atomic_write_text, existing_outputs, write_rows


def test_atomic_write_replaces_whole_files_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "sub" / "a.txt"
    atomic_write_text(path, "one")
    atomic_write_text(path, "two")
    assert path.read_text() == "two" and sorted(p.name for p in path.parent.iterdir()) == ["a.txt"]
    mode = path.stat().st_mode & 0o777
    umask = os.umask(0)
    os.umask(umask)
    assert mode == 0o666 & ~umask  # an ordinary file's permissions, not mkstemp's 0600


def test_a_failed_write_keeps_the_old_file(tmp_path):
    path = tmp_path / "a.txt"
    atomic_write_text(path, "old")

    def fail(tmp):
        tmp.write_text("half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        atomic_write(path, fail)
    assert path.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["a.txt"]


def test_existing_outputs_names_each_file(tmp_path, capsys):
    out = tmp_path / "bench"
    assert existing_outputs(out, (".csv", ".json")) == []
    out.with_suffix(".json").write_text("{}")
    assert existing_outputs(out, (".csv", ".json")) == [out.with_suffix(".json")]
    assert f"{out.with_suffix('.json')} exists (use --force" in capsys.readouterr().err


def test_write_rows_writes_the_same_table_twice(tmp_path):
    rows = [{"method": "eps", "nfe": 20, "value": 1.5}, {"method": "dps", "nfe": 1000, "value": 9.0}]
    write_rows(tmp_path / "t", rows)
    assert json.loads((tmp_path / "t.json").read_text()) == rows
    with (tmp_path / "t.csv").open() as f:
        got = list(csv.DictReader(f))
    assert got == [{k: str(v) for k, v in r.items()} for r in rows]
