"""Real processes for the tests and the benchmark, written once.

* ``harness.processes``: free ports, waiting for a port, stopping a process, the user to run
  daemons as, CPU time and peak memory of a process tree (psutil);
* ``harness.server``: the real ``aurion serve`` (or any HTTP app) on a free port, ready;
* ``harness.pgbouncer``: PgBouncer in transaction pooling mode in front of a database;
* ``harness.citus``: Citus built from its source release into a copy of the embedded
  PostgreSQL, and a coordinator with workers from it (``make test-citus``, ``make bench-citus``);
  ``harness.pytest_citus``, the pytest plugin of the Citus suite.

Imported from the repository root (``pytest``, ``python -m bench.run``); ``src/`` never
imports it.
"""
