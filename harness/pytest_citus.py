"""pytest plugin of the Citus suite: known Citus gaps are expected failures, said out loud.

``python -m harness.citus test`` loads it (``-p harness.pytest_citus``). The tests below fail on
Citus for a known reason, measured and documented in docs/scaling.md (section 4): they still
run, and are reported as XFAIL with that reason, or as XPASS once the cause is gone (then
delete the entry).
"""

from __future__ import annotations

import pytest

# None today: the last ones (writes as sub-plans through the coordinator, lock_timeout not
# reaching the workers, lock waits looked for on the coordinator) went with aurion_delegate.
KNOWN_GAPS: dict[str, str] = {}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        reason = KNOWN_GAPS.get(item.nodeid)
        if reason:
            item.add_marker(pytest.mark.xfail(reason=f"known Citus gap: {reason}", strict=False))
