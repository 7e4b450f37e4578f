"""TLS: SSL contexts (server and upstream client), the per-plan SNI table, the local CA,
key exchange groups, the TLS-ALPN-01-capable listener and the certificate file watcher.

Certificates from a CA are ``bastion.acme``'s; this package never orders one. It reads
stored ACME certificates through ``bastion.state.certs`` when the SNI table is built.
"""
