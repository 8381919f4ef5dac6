"""The ``exactps`` command line as a whole: the commands it lists, and names it rejects.

Each command has its own file: ``test_cli_verify.py``, ``test_cli_bench.py``, ``test_cli_train.py``,
``test_cli_sample.py`` (with ``exactps export``).
"""

import pytest

from exactps.cli import main


def test_verify_rejects_unknown_names(capsys):
    assert main(["verify", "--tasks", "nope", "--no-finite", "--nfe", "2"]) == 2
    assert "unknown task" in capsys.readouterr().err


def test_help_lists_verify(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "verify" in capsys.readouterr().out
