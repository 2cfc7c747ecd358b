"""The gateway's own features below the schema: its database (``store``: audit trail, access requests,
write journal, migrations) and the public pool's rules, history and sweep (``pool``).

Dependencies point one way: ``gateway`` (HTTP edge, wiring) → ``schema`` (types, thin resolvers) →
``features`` → ``policies`` → ``connectors`` (pyproject ``[tool.importlinter]``, checked by ``make test``).
"""
