"""ACME (RFC 8555): the protocol client, challenge solvers, issuance and renewal.

Told which names need certificates, hands back certificates; never knows routes. The
account, certificates, issuance lock and HTTP-01 answers live behind ``bastion.state``
interfaces (``certs.CertStore``, ``challenges.ChallengeTokens``). ``settings.py`` turns the
Config into the issuer's settings; besides it, only ``renewal.py`` reads a Config value (the
certificate files' watch interval).
"""
