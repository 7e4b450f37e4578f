"""Observers of finished requests and operational logging.

An observer is a callable `(req, now) -> None` (see `bastion.http.context.Observer`),
called once per finished request by the protocols' finish hook, in the order the worker
installed them (server/worker.py). The access log (`AccessLog.write`) is the first;
metrics and the dashboard's rollups come next.
"""
