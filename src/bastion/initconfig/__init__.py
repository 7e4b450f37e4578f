"""``bastion init``: a starting config from a few answers, and, from the app's OpenAPI
document, its routes, request validation and authentication (docs/init.md).

`document` reads the document, `security` maps security schemes to auth methods, `routes`
maps paths to routes, `render` writes the YAML text, `files` writes it all to disk, and
`report` says what was done and what comes next."""

from bastion.initconfig.document import (
    Document,
    InitError,
    discover_oidc,
    find_document,
    load_document,
    probe,
)
from bastion.initconfig.files import OPENAPI_FILE, Derived, derive, write_all
from bastion.initconfig.render import Setup
from bastion.initconfig.report import report

__all__ = [
    "OPENAPI_FILE",
    "Derived",
    "Document",
    "InitError",
    "Setup",
    "derive",
    "discover_oidc",
    "find_document",
    "load_document",
    "probe",
    "report",
    "write_all",
]
