"""``python -m rspretrain`` (and ``torchrun -m rspretrain``): the command line.

Guarded: a spawned DataLoader worker never re-runs a package's ``__main__`` (multiprocessing skips it), and the guard
says so in the code as well."""

import sys

from rspretrain.apps.cli import main

if __name__ == "__main__":
    sys.exit(main())
