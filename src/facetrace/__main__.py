"""``python -m facetrace`` runs the command line."""

import sys

from facetrace.cli import main

sys.exit(main())
