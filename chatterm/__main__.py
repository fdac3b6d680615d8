"""``python -m chatterm``: the terminal client, as the ``chat`` command."""

import sys

from chatterm.cli import main

sys.exit(main())
