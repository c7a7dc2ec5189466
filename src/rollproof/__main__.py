"""`python -m rollproof`."""

from rollproof.cli import main

raise SystemExit(main())
