"""API gateway policies: checks and edits a route applies around its handler.

`base.py` holds what policies return and see, `chain.py` runs a route's policies,
`build.py` compiles a route's configuration into them (once per plan).
"""
