"""``python -m exactps.cli`` (e.g. under ``torchrun``): the ``exactps`` command."""

from exactps.cli import main

raise SystemExit(main())
