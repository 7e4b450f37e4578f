"""The exchange between a wire protocol and a handler, independent of any wire format:
the request record, body framing, status lines, problem bodies and the `Downstream`
contract that the HTTP/1.1 connection, the HTTP/2 stream and the cache's capture client
implement."""
