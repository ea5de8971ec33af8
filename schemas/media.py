"""The media event (``media.avsc``), in the same single-object framing as push records."""

from __future__ import annotations

import json
from importlib import resources
from typing import Any, cast

from schemas.framing import Framing


def load_media_schema() -> dict[str, Any]:
    """The shipped media.avsc as a plain (unparsed) JSON schema."""
    text = resources.files("schemas").joinpath("media.avsc").read_text(encoding="utf-8")
    return cast(dict[str, Any], json.loads(text))


class MediaCodec(Framing):
    """Frames media events for Kafka; build once, reuse. ``fetchedAt`` is epoch millis."""

    def __init__(self) -> None:
        super().__init__(load_media_schema())
