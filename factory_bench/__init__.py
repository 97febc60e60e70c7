"""Benchmarks and load generators: each measures a part against its ceiling in the same run
(raw COPY, a bare client, pgbench, bare numpy). ``factory bench`` runs them."""
