"""``python -m discopatch.cli`` (e.g. under ``torchrun -m discopatch.cli fit ...``), the same as ``discopatch``."""

import sys

from .app import main

if __name__ == "__main__":
    sys.exit(main())
