"""Key material read from files: TLS client contexts and JWT public keys.

The bottom layer next to `config/`: pure loading and parsing, no socket, no event loop, so
the config can check the files it names when it is loaded and the runtime builds from the
same code.
"""
