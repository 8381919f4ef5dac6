"""``exactps verify``: the exactness report as a table and as files."""

import json

from exactps.cli import main


def test_verify_prints_a_table_and_writes_files(tmp_path, capsys):
    out = tmp_path / "report"
    args = [
        "verify",
        "--tasks",
        "sr4",
        "--interpolants",
        "ve",
        "--samplers",
        "ddim",
        "--nfe",
        "4",
        "--gmm-samples",
        "100",
        "--atoms",
        "8",
        "--crop",
        "8",
        "--finite-samples",
        "50",
        "--out",
        str(out),
    ]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "gmm prior, sr4" in text and "finite prior, sr4" in text
    rows = json.loads(out.with_suffix(".json").read_text())
    assert {r["prior"] for r in rows} == {"gmm", "finite"}
    assert out.with_suffix(".csv").read_text().startswith("prior,task,")
    # never overwrite without being asked
    assert main(args) == 2
    assert "exists" in capsys.readouterr().err
    assert main([*args, "--force"]) == 0
