"""Where code runs: thread defaults that do not oversubscribe, core counts."""

from __future__ import annotations

import os

import pytest
import torch

from exactps.cli import main
from exactps.runtime import default_threads, usable_cores


def test_omp_num_threads_wins():
    assert default_threads({"OMP_NUM_THREADS": "3"}, load=0.0) == 3


@pytest.mark.parametrize("bad", ["", "0", "-2", "four"])
def test_unusable_omp_num_threads_is_ignored(bad):
    assert default_threads({"OMP_NUM_THREADS": bad}, load=0.0) == usable_cores()


def test_busy_cores_are_left_alone():
    cores = usable_cores()
    assert default_threads({}, load=0.0) == cores
    assert default_threads({}, load=cores - 1) == 1
    assert default_threads({}, load=cores + 5.0) == 1  # never fewer than one
    assert default_threads({}, load=0.4) == cores


def test_usable_cores_is_within_the_affinity_set():
    assert 1 <= usable_cores() <= len(os.sched_getaffinity(0))


def test_cli_sets_the_default_and_rejects_nonpositive_threads(capsys, monkeypatch, tmp_path):
    before = torch.get_num_threads()
    try:
        monkeypatch.setenv("OMP_NUM_THREADS", "1")
        code = main(["sample", "--model", str(tmp_path / "missing"), "--task", "none", "--out", str(tmp_path / "o")])
        assert code == 2 and torch.get_num_threads() == 1
        code = main(["sample", "--model", "m", "--task", "none", "--threads", "0", "--out", str(tmp_path / "o")])
        assert code == 2 and "--threads must be >= 1" in capsys.readouterr().err
    finally:
        torch.set_num_threads(before)
