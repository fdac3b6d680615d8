"""``python -m chatgui``: the desktop client, as the ``chatgui`` command."""

import sys

from chatgui.app import main

sys.exit(main())
