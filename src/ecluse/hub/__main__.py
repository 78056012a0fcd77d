"""``python -m ecluse.hub -f jupyterhub_config.py``: same as ``ecluse-hub``."""

import sys

from . import main

sys.exit(main())
