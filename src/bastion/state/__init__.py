"""Shared state behind an interface: in-process stores now, a Redis store for clusters later.

Protocols (``http1``, ``http2``) never import this package; policies reach it through the
objects ``bastion.policies.build`` hands them.
"""
