"""``python -m rlmx`` is the ``rlmx`` command."""

import sys

from rlmx.cli import main

sys.exit(main())
