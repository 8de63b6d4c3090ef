"""``python -m dispatcher`` runs the command-line interface."""

import sys

from dispatcher.cli import main

sys.exit(main())
