"""`python -m secagg` runs the command-line interface."""

from secagg.cli import main

raise SystemExit(main())
