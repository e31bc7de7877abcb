"""``python -m discopatch``, the same as the ``discopatch`` script."""

import sys

from .cli import main

sys.exit(main())
