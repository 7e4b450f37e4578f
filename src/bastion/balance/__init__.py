"""Load balancing: endpoint state, policies, active and passive health.

All of it lives per worker process: each worker balances, checks and ejects on its
own (see docs/load-balancing.md). Nothing here touches a socket except the
active health probes.
"""
