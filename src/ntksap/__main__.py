"""``python -m ntksap``: the same as the ``ntksap`` command (used under torchrun)."""

from .cli import main

raise SystemExit(main())
