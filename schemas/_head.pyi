from collections.abc import Sequence

def heads(
    header: bytes, values: Sequence[bytes | None], /
) -> list[tuple[str, int | None] | str]: ...
