"""pytest plugin of the Citus suite: known Citus gaps are expected failures, said out loud.

``python -m harness.citus test`` loads it (``-p harness.pytest_citus``). The tests below fail on
Citus for a known reason, measured and documented in docs/scaling.md (section 4): they still
run, and are reported as XFAIL with that reason, or as XPASS once the cause is gone (then
delete the entry).
"""

from __future__ import annotations

import pytest

SLOW_WRITES = (
    "Citus 14 does not route a statement with INSERT in a CTE to one shard ('only SELECT, "
    "UPDATE, or DELETE common table expressions may be router planned'): each write runs as "
    "several sub-plans through the coordinator (about 5 times slower than single-shard statements) "
    "while it holds the parent's lock, so a burst on one parent queues past the pool or "
    "statement timeout (503)"
)
LOCK_TIMEOUT_NOT_PROPAGATED = (
    "the service sets lock_timeout as a connection parameter on the coordinator; Citus does not "
    "pass it on to its connections to the workers (citus.propagate_set_commands = 'none'), so a "
    "duplicate waits on the worker until the statement timeout (503) instead of 200 ms (409)"
)

WAIT_ON_A_WORKER = (
    "the test checks that the request waited for the row lock it holds by looking at the node it "
    "is connected to (the coordinator); on Citus the statement waits on a worker"
)

KNOWN_GAPS = {
    "tests/conversations/lifecycle/test_stale_snapshot.py"
    "::test_a_child_added_while_the_cascade_waited_is_resolved_too": WAIT_ON_A_WORKER,
    "tests/conversations/lifecycle/test_stale_snapshot.py"
    "::test_a_child_moved_while_its_update_waited_changes_its_new_parent": WAIT_ON_A_WORKER,
    "tests/conversations/test_write_path.py"
    "::test_children_of_one_parent_take_turns_and_a_stuck_row_is_a_bounded_503": (
        LOCK_TIMEOUT_NOT_PROPAGATED
    ),
    "tests/conversations/test_create_child.py::TestConcurrency"
    "::test_limit_holds_under_100_parallel_requests": SLOW_WRITES,
    "tests/idempotency/test_idempotency_key.py::TestConcurrentDuplicates"
    "::test_fifty_parallel_requests_with_one_key_create_one_child": SLOW_WRITES,
    "tests/idempotency/test_idempotency_key.py::TestConcurrentDuplicates"
    "::test_a_duplicate_waiting_too_long_gets_409_in_use": LOCK_TIMEOUT_NOT_PROPAGATED,
    "tests/reliability/test_concurrency.py::test_200_simultaneous_children_of_one_parent": (
        SLOW_WRITES
    ),
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        reason = KNOWN_GAPS.get(item.nodeid)
        if reason:
            item.add_marker(pytest.mark.xfail(reason=f"known Citus gap: {reason}", strict=False))
