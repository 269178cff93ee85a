"""pytest plugin of the Citus suite: known Citus gaps are expected failures, said out loud.

``python -m harness.citus test`` loads it (``-p harness.pytest_citus``). The tests below fail on
Citus for a known reason, measured and documented in docs/scaling.md (section 4): they still
run, and are reported as XFAIL with that reason, or as XPASS once the cause is gone (then
delete the entry).
"""

from __future__ import annotations

import pytest

# The last gaps of the write path (writes as sub-plans through the coordinator, lock_timeout
# not reaching the workers, lock waits looked for on the coordinator) went with
# aurion_delegate. What is left: concurrent child creations are not coalesced on Citus (they go
# one by one, each delegated: docs/scaling.md, section 4), so the tests that require a group's
# statement to have been sent fail there; what each request gets is checked on Citus by the
# rest of the suite.
_NOT_COALESCED = (
    "concurrent child creations go one by one on Citus (the grouped statement is not "
    "delegated): docs/scaling.md, section 4"
)
KNOWN_GAPS: dict[str, str] = {
    f"tests/conversations/test_coalescing.py::{name}": _NOT_COALESCED
    for name in (
        "test_a_burst_over_four_parents_goes_in_fewer_statements_each_answered_as_alone",
        "test_a_burst_without_keys_is_coalesced_too",
        "test_the_children_limit_inside_a_group_answers_each_request_as_alone",
        "test_a_bad_parent_in_a_group_answers_only_its_own_requests_and_writes_nothing",
        "test_a_key_sent_twice_at_once_makes_one_child_and_two_identical_answers",
        "test_resolved_and_closed_parents_are_reopened_once_by_a_group",
        "test_plain_requests_mixed_with_overrides_messages_and_if_match",
        "test_two_callers_locking_the_same_parents_in_opposite_orders_do_not_deadlock",
    )
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        reason = KNOWN_GAPS.get(item.nodeid)
        if reason:
            item.add_marker(pytest.mark.xfail(reason=f"known Citus gap: {reason}", strict=False))
