"""The benchmark's order of targets within a round is counterbalanced (bench/scenarios.py)."""

from __future__ import annotations

from collections import Counter
from itertools import pairwise

import pytest

from bench.run import parse_args
from bench.scenarios import balanced_order, balanced_rounds, design_rounds


@pytest.mark.parametrize("n", [2, 3, 4, 5, 6])
def test_every_target_follows_every_other_alike_and_takes_every_position(n: int) -> None:
    items = [f"t{i}" for i in range(n)]
    rounds = 2 * n if n % 2 else n
    orders = [balanced_order(items, r) for r in range(rounds)]
    assert all(sorted(order) == items for order in orders)
    follows = Counter(pair for order in orders for pair in pairwise(order))
    every_pair = {(a, b) for a in items for b in items if a != b}
    assert set(follows) == every_pair
    assert len(set(follows.values())) == 1, follows
    positions = Counter((i, item) for order in orders for i, item in enumerate(order))
    assert len(positions) == n * n
    assert len(set(positions.values())) == 1
    assert balanced_order(items, rounds) == orders[0], "the design repeats after its rounds"


def test_the_four_targets_no_longer_keep_their_neighbours() -> None:
    targets = ["pgbench", "reference", "orm", "service"]
    before_service = {balanced_order(targets, r)[balanced_order(targets, r).index("service") - 1]
                      for r in range(4) if balanced_order(targets, r)[0] != "service"}  # fmt: skip
    assert before_service == {"pgbench", "reference", "orm"}


@pytest.mark.parametrize(("n", "rounds"), [(1, 6), (2, 6), (3, 6), (4, 8), (5, 10)])
def test_the_default_rounds_are_whole_designs(n: int, rounds: int) -> None:
    assert balanced_rounds(n) == rounds
    assert rounds % design_rounds(n) == 0
    assert rounds >= 5


def test_make_bench_runs_two_whole_designs_for_its_four_targets() -> None:
    assert parse_args([]).rounds == 8
    assert parse_args(["--quick"]).rounds == 1
    assert parse_args(["--targets", "reference,service"]).rounds == 6
    assert parse_args(["--rounds", "3"]).rounds == 3
