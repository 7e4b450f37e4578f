"""OpenAPI 3.0 / 3.1 documents compiled into request checks: where a document comes from
(`source`), its schemas as validators (`schemas`), and its operations (`operations`)."""
