"""``python -m manifold_spectral`` runs the command line (``manifold_spectral.cli.main``)."""

from .cli import main

raise SystemExit(main())
