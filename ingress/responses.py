"""Headers of the hot paths' answers (``/v1/uplink``, ``/v1/meta``), sent as raw messages.

No Response object per push: building one cost a tenth of a request's CPU (bench/RESULTS.md,
"Ingress load").
"""

from __future__ import annotations

JSON_HEADERS = [(b"content-type", b"application/json")]
