"""The web console: the pipeline at a glance, dead letters, the quarantine, traces and
conversations, rendered on the server from the operator's library (``uplink.operate``).

``console_app(settings)`` builds the Starlette app; ``uplink console`` serves it.
"""

from uplink.console.app import console_app
from uplink.console.settings import ConsoleSettings

__all__ = ["ConsoleSettings", "console_app"]
