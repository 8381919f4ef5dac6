"""Writing result files safely: atomic replacement, refusal to overwrite, CSV/JSON tables.

Every file exactps writes (checkpoints, exported models, pictures, result tables) goes through
:func:`atomic_write`: the content is written to a temporary file in the target's directory,
flushed to disk, then moved into place with ``os.replace`` (atomic on POSIX), so a reader never
sees a half-written file under the final name.
"""

from __future__ import annotations

import csv
import json
import os
import re
import sys
import tempfile
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

__all__ = ["atomic_write", "atomic_write_text", "existing_outputs", "temporary_target", "write_rows"]

#: :func:`atomic_write`'s temporary file for the final name ``name``: ``.<name>.<8 mkstemp characters>.tmp``
_TEMPORARY = re.compile(r"^\.(?P<name>.+)\.[A-Za-z0-9_]{8}\.tmp$")


def _read_umask() -> int:
    """The process umask (read once, at import: setting it is process-wide, so never toggled later)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_UMASK = _read_umask()


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # not supported on this platform / file system
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp)`` on a temporary file next to ``path``, fsync it, then ``os.replace`` it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp's 0600 -> the permissions of an ordinary new file
        with tmp.open("rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def temporary_target(path: str | Path) -> str | None:
    """The final file name whose :func:`atomic_write` left the temporary file ``path`` (an interrupted
    write), or None if ``path`` is not such a file."""
    match = _TEMPORARY.match(Path(path).name)
    return match.group("name") if match else None


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically (temporary file in the same directory + ``os.replace``)."""
    atomic_write(Path(path), lambda tmp: tmp.write_text(text))


def existing_outputs(out: Path, suffixes: Iterable[str]) -> list[Path]:
    """The files ``out.<suffix>`` that already exist (each is named on stderr): a command that would
    overwrite them refuses unless asked (``--force``)."""
    found = [out.with_suffix(s) for s in suffixes if out.with_suffix(s).exists()]
    for path in found:
        print(f"exactps: error: {path} exists (use --force to overwrite)", file=sys.stderr)
    return found


def write_rows(out: Path, rows: Sequence[dict]) -> None:
    """Write ``rows`` (dicts with the same keys) to ``out.csv`` and ``out.json`` atomically."""

    def write_csv(tmp: Path) -> None:
        with tmp.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)

    atomic_write(out.with_suffix(".csv"), write_csv)
    atomic_write_text(out.with_suffix(".json"), json.dumps(list(rows), indent=1))
    print(f"wrote {out.with_suffix('.csv')} and {out.with_suffix('.json')}")
