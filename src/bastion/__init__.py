"""bastion: an HTTPS reverse proxy and API gateway for APIs on your own machines."""

__version__ = "0.1.0"
