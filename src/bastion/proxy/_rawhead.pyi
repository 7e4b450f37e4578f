# The C scans of proxy/raw_head.py (_rawhead.c); built with the compiled build only.

def configure(
    kinds: dict[bytes, int], plain_connection: frozenset[bytes], kind_numbers: tuple[int, ...], /
) -> None: ...
def locate(buf: bytes, begin: int, /) -> tuple[int, int]: ...
def scan(
    buf: bytes,
    start: int,
    end: int,
    status_line: bytes,
    drop: tuple[bytes, ...] = ...,
    prefixes: tuple[bytes, ...] = ...,
    /,
) -> tuple[list[bytes], bool, bool, bytes] | None: ...
def split(buf: bytes, start: int, end: int, /) -> list[tuple[bytes, bytes]]: ...
