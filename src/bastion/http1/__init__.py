"""HTTP/1.1 wire protocol on asyncio Protocols (httptools underneath)."""
