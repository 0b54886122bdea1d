"""Contract: a :class:`Restriction` hides records on every read path.

Fixture data: org-a and org-b each pushed an Observation about Patient/1
(org-b's also labelled HIV); org-a's Patient/1 carries a resident id. A
caller limited to org-a, or hiding HIV, must get the same answers as if the
hidden records did not exist: no read, no search match, no count, no history
entry, no chained match.
"""

from __future__ import annotations

import pytest
from store.conftest import Records, ts

from hie.store.base import Store
from hie.store.index import IndexEntries
from hie.store.query import (
    AnyOf,
    ChainMatch,
    Cursor,
    ReferenceMatch,
    Restriction,
    SearchQuery,
    SortKey,
    TokenMatch,
)

ONLY_A = Restriction(sources=frozenset({"org-a"}))
ONLY_B = Restriction(sources=frozenset({"org-b"}))
NO_HIV = Restriction(hidden_labels=frozenset({"HIV"}))
NOTHING = Restriction(sources=frozenset())
ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"


def obs_index(code: str, *labels: str) -> IndexEntries:
    return IndexEntries(token=[("code", "", code), *[("_security", ACT_CODE, lb) for lb in labels]],
                        reference=[("subject", "Patient", "1")])


@pytest.fixture
async def region(store: Store, records: Records) -> Store:
    await records.put(
        store,
        records.record("Patient", "1", source="org-a",
                       index=IndexEntries(token=[("identifier", "urn:id", "110")])),
        records.record("Observation", "a1", source="org-a", index=obs_index("X")),
        records.record("Observation", "b1", source="org-b", index=obs_index("X", "HIV")),
        records.record("Observation", "b2", source="org-b", index=obs_index("X", "ETH")),
        records.record("Observation", "a2", source="org-a", index=obs_index("X")),
    )
    return store


def code_x(restriction: Restriction | None = None, *sort: SortKey) -> SearchQuery:
    return SearchQuery("Observation", (AnyOf((TokenMatch("code", "X"),)),), sort=sort,
                       restriction=restriction)


async def test_read_hides_other_sources_and_hidden_labels(region: Store) -> None:
    assert (await region.read("Observation", "a1", restriction=ONLY_A)).id == "a1"
    assert await region.read("Observation", "b1", restriction=ONLY_A) is None
    assert await region.read("Observation", "b1", restriction=NO_HIV) is None
    assert (await region.read("Observation", "b2", restriction=NO_HIV)).id == "b2"
    assert await region.read("Observation", "a1", restriction=NOTHING) is None
    assert (await region.read("Observation", "b1", restriction=Restriction())).id == "b1"
    assert (await region.read("Observation", "b1")).id == "b1"


async def test_read_version_checks_each_version(region: Store, records: Records) -> None:
    # org-b updates org-a's observation: version 1 is org-a's, version 2 org-b's
    await records.put(region, records.record("Observation", "a1", version=2, source="org-b",
                                             index=obs_index("X")))
    assert (await region.read_version("Observation", "a1", 1, restriction=ONLY_A)).version == 1
    assert await region.read_version("Observation", "a1", 2, restriction=ONLY_A) is None
    assert await region.read("Observation", "a1", restriction=ONLY_A) is None
    assert await region.read_version("Observation", "b1", 1, restriction=NO_HIV) is None
    assert (await region.read_version("Observation", "b2", 1, restriction=NO_HIV)).id == "b2"


async def test_labels_of_an_old_version_do_not_hide_the_new_one(
        region: Store, records: Records) -> None:
    await records.put(region, records.record("Observation", "b1", version=2, source="org-b",
                                             index=obs_index("X")))
    assert (await region.read("Observation", "b1", restriction=NO_HIV)).version == 2
    assert await region.read_version("Observation", "b1", 1, restriction=NO_HIV) is None


async def test_read_many_leaves_hidden_records_out(region: Store) -> None:
    keys = [("Observation", i) for i in ("a1", "b1", "b2", "a2")]
    assert sorted(r.id for r in await region.read_many(keys, restriction=ONLY_A)) == ["a1", "a2"]
    assert sorted(r.id for r in await region.read_many(keys, restriction=NO_HIV)) == [
        "a1", "a2", "b2"]
    assert await region.read_many(keys, restriction=NOTHING) == []


async def test_search_and_count_leave_hidden_records_out(region: Store, records: Records) -> None:
    assert await records.ids(region, code_x(ONLY_A)) == ["a1", "a2"]
    assert await records.ids(region, code_x(ONLY_B)) == ["b1", "b2"]
    assert await records.ids(region, code_x(NO_HIV)) == ["a1", "b2", "a2"]
    both = Restriction(sources=frozenset({"org-b"}), hidden_labels=frozenset({"HIV", "PSY"}))
    assert await records.ids(region, code_x(both)) == ["b2"]
    assert await records.ids(region, code_x(NOTHING)) == []
    assert await region.count(code_x(ONLY_A)) == 2
    assert await region.count(code_x(NO_HIV)) == 3
    assert await region.count(code_x(NOTHING)) == 0
    assert await region.count(code_x()) == 4


async def test_paging_never_counts_hidden_records(region: Store) -> None:
    first = await region.search(code_x(ONLY_A), limit=1)
    assert [r.id for r in first.resources] == ["a1"] and first.next is not None
    second = await region.search(code_x(ONLY_A), limit=1, cursor=first.next)
    assert [r.id for r in second.resources] == ["a2"] and second.next is None

    sorted_query = code_x(ONLY_A, SortKey("_id", "token", descending=True))
    first = await region.search(sorted_query, limit=1)
    second = await region.search(sorted_query, limit=1, cursor=first.next)
    assert [r.id for r in first.resources + second.resources] == ["a2", "a1"]
    assert second.next is None
    assert (await region.search(code_x(ONLY_A), limit=2)).next is None


async def test_restriction_also_given_as_a_search_with_cursor(region: Store) -> None:
    page = await region.search(code_x(NO_HIV), limit=5, cursor=Cursor(after_seq=0))
    assert [r.id for r in page.resources] == ["a1", "b2", "a2"]


async def test_history_checks_each_version(region: Store, records: Records) -> None:
    await records.put(region, records.record("Observation", "a1", version=2, source="org-b",
                                             index=obs_index("X"), last_updated=ts(100)))
    versions, total = await region.history(resource_type="Observation", id="a1", limit=10,
                                           restriction=ONLY_A)
    assert [(r.id, r.version) for r in versions] == [("a1", 1)]
    assert total == 1

    versions, total = await region.history(resource_type="Observation", limit=10,
                                           restriction=NO_HIV)
    assert sorted((r.id, r.version) for r in versions) == [
        ("a1", 1), ("a1", 2), ("a2", 1), ("b2", 1)]
    assert total == 4
    versions, total = await region.history(limit=10, restriction=ONLY_B)
    assert sorted((r.id, r.version) for r in versions) == [("a1", 2), ("b1", 1), ("b2", 1)]
    assert total == 3
    assert await region.history(limit=10, restriction=NOTHING) == ([], 0)


def by_patient_identifier(restriction: Restriction | None, value: str = "110") -> SearchQuery:
    chain = ChainMatch("subject", "Patient", TokenMatch("identifier", value, "urn:id"))
    return SearchQuery("Observation", (AnyOf((chain,)),), restriction=restriction)


async def test_chain_matches_through_a_visible_target(region: Store, records: Records) -> None:
    assert await records.ids(region, by_patient_identifier(None)) == ["a1", "b1", "b2", "a2"]
    assert await records.ids(region, by_patient_identifier(NO_HIV)) == ["a1", "b2", "a2"]
    assert await records.ids(region, by_patient_identifier(None, "999")) == []
    assert await region.count(by_patient_identifier(ONLY_A)) == 2


async def test_hidden_chain_target_makes_no_match(region: Store, records: Records) -> None:
    # org-b may see its own observations, but not org-a's Patient/1: the chain
    # through that patient must not reveal that the identifier belongs to it
    assert await records.ids(region, by_patient_identifier(ONLY_B)) == []
    assert await region.count(by_patient_identifier(ONLY_B)) == 0
    plain = SearchQuery("Observation", (AnyOf((ReferenceMatch("subject", "1", "Patient"),)),),
                        restriction=ONLY_B)
    assert await records.ids(region, plain) == ["b1", "b2"]


async def test_chain_ignores_deleted_targets(region: Store, records: Records) -> None:
    await records.put(region, records.record("Patient", "1", version=2, deleted=True))
    assert await records.ids(region, by_patient_identifier(None)) == []


async def test_chain_with_restriction_on_the_target_labels(
        region: Store, records: Records) -> None:
    await records.put(region, records.record(
        "Patient", "1", version=2, source="org-a",
        index=IndexEntries(token=[("identifier", "urn:id", "110"),
                                  ("_security", ACT_CODE, "PSY")])))
    no_psy = Restriction(hidden_labels=frozenset({"PSY"}))
    assert await records.ids(region, by_patient_identifier(no_psy)) == []
    assert await records.ids(region, by_patient_identifier(NO_HIV)) == ["a1", "b2", "a2"]
