"""ACME (RFC 8555): the protocol client, challenge solvers, issuance and renewal.

Told which names need certificates, hands back certificates; never knows routes. The
account, certificates, issuance lock and HTTP-01 answers live behind ``bastion.state``
interfaces (``certs.CertStore``, ``challenges.ChallengeTokens``). ``settings.py`` is the
only module that reads the Config.
"""
