"""Entry point: `python -m bench --help`."""

import sys

from bench.suite import main

sys.exit(main())
