from collections.abc import Sequence

def heads(
    header: bytes, values: Sequence[bytes | None], /
) -> tuple[list[str], list[int | None], list[tuple[int, str]]]: ...
