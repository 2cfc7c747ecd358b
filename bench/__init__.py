"""The customer-graph benchmark: ``python -m bench`` (``make bench``).

Starts each demo system and the gateway in its own process, measures the scenarios S1–S4 against
the gateway and against a hand-written direct client (``bench.baseline``), and writes
``bench/results/<date>.md``, ``.json``, ``-latency.png`` and ``-profile.txt``.
"""
