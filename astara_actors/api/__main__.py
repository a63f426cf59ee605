"""``python -m astara_actors.api --config-file=FILE``: serve the API standalone (see server.py)."""

import sys

from .server import main

sys.exit(main())
