"""TLS: certificate storage, the local CA, SSL contexts and the per-plan SNI table."""
