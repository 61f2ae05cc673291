"""`python -m codeloop`: the same entry point as the `codeloop` command."""

from codeloop.cli import main

raise SystemExit(main())
