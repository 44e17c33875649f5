"""``python -m rspretrain`` (and ``torchrun -m rspretrain``): the command line."""

import sys

from rspretrain.apps.cli import main

sys.exit(main())
