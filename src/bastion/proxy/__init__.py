"""Forwarding to upstreams: connection pools, the request/response exchange, tunnels."""
