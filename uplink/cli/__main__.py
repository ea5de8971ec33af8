"""``python -m uplink.cli``: the ``uplink`` command."""

import sys

from uplink.cli.main import main

sys.exit(main())
