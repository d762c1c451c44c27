"""``python -m ntksap.sweep``: one sweep worker (what the local backend starts)."""

from .worker import main

raise SystemExit(main())
