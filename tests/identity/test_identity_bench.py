"""The identity benchmark runs end to end on a small population and its
accuracy counting is right."""

from __future__ import annotations

from pathlib import Path

from benchmarks.bench_identity import Incoming, accuracy, population, timed_run
from hie.identity.model import LinkResult


def test_population_is_deterministic_and_varied() -> None:
    a, b = population(3, 300), population(3, 300)
    assert [i.patient["id"] for i in a] == [i.patient["id"] for i in b]
    assert len({i.truth for i in a}) < 300  # some people visit several hospitals


async def test_small_run_links_without_wrong_merges(tmp_path: Path) -> None:
    items = population(5, 300)
    seconds, results = await timed_run(items, batch=50, link=True, folder=tmp_path)
    assert seconds > 0 and len(results) == 300
    acc = accuracy(items, results)
    assert acc["wrongly_merged_pairs"] == 0
    assert acc["recall"] > 0.8


def test_accuracy_counts_pairs() -> None:
    items = [Incoming(t, "s", {}) for t in (1, 1, 1, 2)]
    results = [LinkResult(str(i), p, "new") for i, p in enumerate(("x", "x", "y", "x"))]
    acc = accuracy(items, results)
    assert acc["true_pairs"] == 3 and acc["linked_pairs"] == 3
    assert acc["correct_pairs"] == 1 and acc["wrongly_merged_pairs"] == 2
    assert acc["missed_pairs"] == 2
