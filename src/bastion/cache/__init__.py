"""RFC 9111 shared caching: freshness rules, cache keys, stores and purge.

Nothing here knows HTTP framing: the proxy hands over status, header fields and body
bytes, and gets back stored heads and bodies to send.
"""
