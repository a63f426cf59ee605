"""``python -m astara_actors.api --config-file=FILE``: serve the API standalone (see server.py)."""

import sys

from astara_actors.api.server import main

sys.exit(main())
