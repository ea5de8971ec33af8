"""``python -m cli``: the ``uplink`` command."""

import sys

from cli.main import main

sys.exit(main())
