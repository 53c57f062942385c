"""``python -m unifashion.cli``: the same as the ``unifashion`` console script."""

import sys

from unifashion.cli import main

sys.exit(main())
