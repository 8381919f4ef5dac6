"""Golden figures: the public commands give today the numbers they gave before the redesign.

``tests/golden/figures.json`` and ``tests/golden/verify_quick.json`` were written by
``tests/golden/record.py`` (``--full`` for the latter) at commit 7f77e35, before the registries and the
``train``/``cli`` packages: the same seeds must give the same numbers (to float tolerance), and
``exactps sample`` the same files. The ``sample`` entry was re-recorded when ``sample`` changed on
purpose (per-image folders with the uncertainty outputs, seeds keyed by file name, ``--crop`` for the
old centre-crop): from then on it guards that behaviour.
"""

import json
import math
from pathlib import Path

import pytest
from golden.record import record, verify_rows

GOLDEN = Path(__file__).resolve().parent / "golden"
REL = 1e-5  # float tolerance: thread counts may change summation order


def _close(got: float, want: float) -> bool:
    return math.isclose(got, want, rel_tol=REL, abs_tol=1e-9)


def _same_rows(got: list[dict], want: list[dict]) -> None:
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        assert {k: g[k] for k in g if k != "value"} == {k: w[k] for k in w if k != "value"}
        assert _close(g["value"], w["value"]), (g, w)


@pytest.fixture(scope="module")
def figures():
    return record(full=False)


def test_verify_rows_are_unchanged(figures):
    _same_rows(figures["verify"], json.loads((GOLDEN / "figures.json").read_text())["verify"])


def test_train_losses_are_unchanged(figures):
    want = json.loads((GOLDEN / "figures.json").read_text())["train_losses"]
    assert len(figures["train_losses"]) == len(want)
    assert all(_close(g, w) for g, w in zip(figures["train_losses"], want, strict=True))


def test_other_objectives_and_operators_train_as_before(figures):
    """Conditional and unconditional objectives; average-pooling SR, motion blur, colorization, A = 0;
    scalar conditioning. (Colorization's variance map is now computed in closed form: equal to float
    round-off, far inside the tolerance.)"""
    want = json.loads((GOLDEN / "figures.json").read_text())["variant_losses"]
    assert figures["variant_losses"].keys() == want.keys()
    for name, losses in want.items():
        assert all(_close(g, w) for g, w in zip(figures["variant_losses"][name], losses, strict=True)), name


def test_sample_psnr_and_files_are_unchanged(figures):
    want = json.loads((GOLDEN / "figures.json").read_text())["sample"]
    assert figures["sample"]["files"] == want["files"]
    for key, value in want["average"].items():
        assert _close(figures["sample"]["average"][key], value), key


@pytest.mark.slow
def test_verify_quick_is_unchanged(tmp_path):
    """The whole ``exactps verify --quick`` report (about a minute)."""
    _same_rows(verify_rows(tmp_path, full=True), json.loads((GOLDEN / "verify_quick.json").read_text()))
