"""What ``bastion trust`` prints: where the local CA root is and how to install it."""

from __future__ import annotations

from pathlib import Path

__all__ = ["trust_text"]


def trust_text(root: Path, fingerprint: str) -> str:
    return f"""\
bastion local CA root certificate:
  {root}
  SHA-256 fingerprint {fingerprint}

Certificates for localhost, IP addresses and internal names are signed by this root.
Clients trust them once the root is installed (it never leaves this machine; its key
is {root.with_suffix(".key")}, mode 0600):

  Debian / Ubuntu:
    sudo cp {root} /usr/local/share/ca-certificates/bastion-local-ca.crt
    sudo update-ca-certificates
  Fedora / RHEL:
    sudo cp {root} /etc/pki/ca-trust/source/anchors/bastion-local-ca.crt
    sudo update-ca-trust
  macOS:
    sudo security add-trusted-cert -d -r trustRoot \\
      -k /Library/Keychains/System.keychain {root}
  Firefox uses its own store: Settings > Privacy & Security > Certificates >
    View Certificates > Authorities > Import, or set security.enterprise_roots.enabled.
  curl, one request:
    curl --cacert {root} https://localhost:8443/
  Python (httpx, requests): SSL_CERT_FILE={root}

To stop trusting it, remove the file you copied and run the update command again."""
