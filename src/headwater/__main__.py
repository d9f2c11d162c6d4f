"""``python -m headwater``: the same as the ``headwater`` console script."""

import sys

from headwater.cli import main

sys.exit(main())
