"""What the admin serves that is not JSON: its login page (with its stylesheet: the page
runs under a CSP that allows no inline style or script) and the dashboard's files.

The dashboard is a directory of static files (`index.html` and what it loads); a file is
served under `/static/<name>` only when `<name>` is a plain file name present in that
directory with a known type: no sub-directory, no dot file, no decoding of the name
(a `%` anywhere is refused), so no path leaves the directory.
"""

from __future__ import annotations

import html
import os
import re
from pathlib import Path

__all__ = ["LOGIN_CSS", "StaticFiles", "default_dashboard", "login_page"]

TYPES = {
    ".html": b"text/html; charset=utf-8",
    ".css": b"text/css; charset=utf-8",
    ".js": b"text/javascript; charset=utf-8",
    ".mjs": b"text/javascript; charset=utf-8",
    ".json": b"application/json",
    ".svg": b"image/svg+xml",
    ".png": b"image/png",
    ".ico": b"image/x-icon",
    ".woff2": b"font/woff2",
    ".txt": b"text/plain; charset=utf-8",
}
_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}")
MAX_FILE = 8 * 1024 * 1024


def default_dashboard() -> Path:
    """The dashboard shipped with bastion (package data of bastion.observe)."""
    import bastion.observe

    return Path(bastion.observe.__file__).parent / "dashboard"


class StaticFiles:
    """The dashboard directory's files, read when asked (a changed file is served as it
    is now)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def read(self, name: str) -> tuple[bytes, bytes] | None:
        """(content type, content) of the file `name`, or None."""
        if not _NAME.fullmatch(name) or ".." in name:
            return None
        kind = TYPES.get(os.path.splitext(name)[1].lower())
        if kind is None:
            return None
        try:
            present = name in os.listdir(self.directory)
        except OSError:
            return None
        if not present:
            return None
        path = self.directory / name
        try:
            if not path.is_file() or path.is_symlink() or path.stat().st_size > MAX_FILE:
                return None
            return kind, path.read_bytes()
        except OSError:
            return None


LOGIN_CSS = b"""body{font:15px/1.4 system-ui,sans-serif;background:#f4f5f7;color:#1d2330;margin:0}
main{max-width:22rem;margin:12vh auto;background:#fff;padding:2rem;border-radius:8px;
box-shadow:0 1px 4px rgba(0,0,0,.12)}
h1{font-size:1.3rem;margin:0 0 1rem}label{display:block;margin-bottom:.3rem}
input{width:100%;box-sizing:border-box;padding:.5rem;font:inherit;margin-bottom:1rem}
button{padding:.5rem 1.2rem;font:inherit;cursor:pointer}
.error{color:#a4161a;margin:0 0 1rem}.hint{color:#5c6470;font-size:.85rem;margin-top:1rem}
"""

_LOGIN = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>bastion admin: log in</title>
<link rel="stylesheet" href="/login.css">
</head>
<body>
<main>
<h1>bastion admin</h1>
{error}<form method="post" action="/login">
<label for="token">Admin token</label>
<input id="token" name="token" type="password" autocomplete="current-password" required autofocus>
<button type="submit">Log in</button>
</form>
<p class="hint">The token is the value of <code>admin.token</code> in the gateway's config.</p>
</main>
</body>
</html>
"""


def login_page(error: str | None = None) -> bytes:
    shown = f'<p class="error" id="error">{html.escape(error)}</p>\n' if error else ""
    return _LOGIN.replace("{error}", shown).encode()
