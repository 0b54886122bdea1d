"""Contract: :class:`Grant`s of a :class:`Restriction` open other hospitals'
records of some patients, on every read path, and nothing else.

Fixture data — two hospitals' records of two patients. The regional person
P1 is ``Patient/a1`` at org-a and ``Patient/b1`` at org-b (linked); P2 is
``Patient/a2`` and ``Patient/b2``. All observations have code X:

========  ======  ==========================  ======
id        source  patient reference           labels
========  ======  ==========================  ======
oa1       org-a   subject → a1
oa1-hiv   org-a   subject → a1                HIV
oa2       org-a   subject → a2
ob1       org-b   subject → b1
ob1-hiv   org-b   subject → b1                HIV
ob1-psy   org-b   subject → b1                PSY
ob1-pt    org-b   patient → b1 (other param)
ob2       org-b   subject → b2
ob-perf   org-b   performer → b1 (not granted), subject → Group/g
oc1       org-c   subject → b1
eb1       org-b   subject → b1 (an Encounter)
========  ======  ==========================  ======

A doctor at org-a (``DOCTOR``) sees all of org-a's records (labelled ones too:
its base rule hides no label) and, through a consent for P1, org-b's records
of a1/b1 except HIV and PSY.
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
    Grant,
    ReferenceMatch,
    Restriction,
    SearchQuery,
    SortKey,
    TokenMatch,
)

ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
P1 = frozenset({"a1", "b1"})
PARAMS = frozenset({"subject", "patient"})
B = frozenset({"org-b"})
SENSITIVE = frozenset({"HIV", "PSY"})


def restriction(*grants: Grant, hidden: frozenset[str] = frozenset()) -> Restriction:
    return Restriction(sources=frozenset({"org-a"}), hidden_labels=hidden, grants=grants)


CONSENT_P1 = Grant(patients=P1, sources=B, params=PARAMS, hidden_labels=SENSITIVE)
DOCTOR = restriction(CONSENT_P1)
OWN_OBS = ["oa1", "oa1-hiv", "oa2"]
GRANTED_OBS = ["ob1", "ob1-pt"]
VISIBLE_OBS = sorted(OWN_OBS + GRANTED_OBS)
ALL_OBS = ["oa1", "oa1-hiv", "oa2", "ob1", "ob1-hiv", "ob1-psy", "ob1-pt", "ob2", "ob-perf",
           "oc1"]


def refs(param: str, patient: str, *more: tuple[str, str, str]) -> list[tuple[str, str, str]]:
    return [(param, "Patient", patient), *more]


def entries(references: list[tuple[str, str, str]], *labels: str,
            identifier: str | None = None) -> IndexEntries:
    tokens = [("code", "", "X"), *[("_security", ACT_CODE, lb) for lb in labels]]
    if identifier:
        tokens = [("identifier", "urn:id", identifier)]
    return IndexEntries(token=tokens, reference=references)


@pytest.fixture
async def region(store: Store, records: Records) -> Store:
    r = records.record
    await records.put(
        store,
        r("Patient", "a1", source="org-a", index=entries([], identifier="110")),
        r("Patient", "a2", source="org-a", index=entries([], identifier="220")),
        r("Patient", "b1", source="org-b", index=entries([], identifier="110")),
        r("Patient", "b2", source="org-b", index=entries([], identifier="220")),
        r("Observation", "oa1", source="org-a", index=entries(refs("subject", "a1"))),
        r("Observation", "oa1-hiv", source="org-a", index=entries(refs("subject", "a1"), "HIV")),
        r("Observation", "oa2", source="org-a", index=entries(refs("subject", "a2"))),
        r("Observation", "ob1", source="org-b", index=entries(refs("subject", "b1"))),
        r("Observation", "ob1-hiv", source="org-b", index=entries(refs("subject", "b1"), "HIV")),
        r("Observation", "ob1-psy", source="org-b", index=entries(refs("subject", "b1"), "PSY")),
        r("Observation", "ob1-pt", source="org-b", index=entries(refs("patient", "b1"))),
        r("Observation", "ob2", source="org-b", index=entries(refs("subject", "b2"))),
        r("Observation", "ob-perf", source="org-b", index=entries(
            refs("performer", "b1", ("subject", "Group", "g")))),
        r("Observation", "oc1", source="org-c", index=entries(refs("subject", "b1"))),
        r("Encounter", "eb1", source="org-b", index=entries(refs("subject", "b1"))),
    )
    return store


def code_x(restr: Restriction | None, *sort: SortKey) -> SearchQuery:
    return SearchQuery("Observation", (AnyOf((TokenMatch("code", "X"),)),), sort=sort,
                       restriction=restr)


def every(rtype: str, restr: Restriction | None) -> SearchQuery:
    return SearchQuery(rtype, restriction=restr)


async def visible_ids(store: Store, query: SearchQuery) -> list[str]:
    """Every id of ``query`` over all its pages (of two), sorted."""
    ids: list[str] = []
    cursor: Cursor | None = None
    while True:
        page = await store.search(query, limit=2, cursor=cursor)
        ids += [r.id for r in page.resources]
        if page.next is None:
            return sorted(ids)
        cursor = page.next


async def readable(store: Store, rtype: str, ids: list[str], restr: Restriction) -> list[str]:
    return sorted([i for i in ids if await store.read(rtype, i, restriction=restr) is not None])


# ---- what one grant opens -----------------------------------------------------

async def test_read_opens_the_granted_patients_records_only(region: Store) -> None:
    assert await readable(region, "Observation", ALL_OBS, DOCTOR) == VISIBLE_OBS
    # the Patient resources of P1 themselves, not those of P2 at org-b
    assert await readable(region, "Patient", ["a1", "a2", "b1", "b2"], DOCTOR) == [
        "a1", "a2", "b1"]
    # the Encounter of P1 too (types=None: any type)
    assert (await region.read("Encounter", "eb1", restriction=DOCTOR)).source == "org-b"


async def test_read_many_search_and_count_agree(region: Store) -> None:
    keys = [("Observation", i) for i in ALL_OBS] + [("Patient", "b1"), ("Patient", "b2"),
                                                    ("Encounter", "eb1")]
    got = sorted((r.resource_type, r.id) for r in await region.read_many(keys,
                                                                         restriction=DOCTOR))
    assert got == [("Encounter", "eb1"), *[("Observation", i) for i in VISIBLE_OBS],
                   ("Patient", "b1")]
    assert await visible_ids(region, code_x(DOCTOR)) == VISIBLE_OBS
    assert await visible_ids(region, every("Observation", DOCTOR)) == VISIBLE_OBS
    assert await region.count(code_x(DOCTOR)) == len(VISIBLE_OBS)
    assert await region.count(every("Patient", DOCTOR)) == 3
    assert await visible_ids(region, every("Patient", DOCTOR)) == ["a1", "a2", "b1"]


async def test_keyset_and_sorted_pages_hold_exactly_the_visible_records(region: Store) -> None:
    first = await region.search(code_x(DOCTOR), limit=4)
    second = await region.search(code_x(DOCTOR), limit=4, cursor=first.next)
    assert [r.id for r in first.resources] == ["oa1", "oa1-hiv", "oa2", "ob1"]
    assert [r.id for r in second.resources] == ["ob1-pt"] and second.next is None

    by_id = code_x(DOCTOR, SortKey("_id", "token", descending=True))
    ids: list[str] = []
    cursor: Cursor | None = None
    while True:
        page = await region.search(by_id, limit=2, cursor=cursor)
        ids += [r.id for r in page.resources]
        if page.next is None:
            break
        cursor = page.next
    assert ids == sorted(VISIBLE_OBS, reverse=True)
    assert (await region.search(by_id, limit=5)).next is None


async def test_a_patient_reference_in_a_param_not_granted_opens_nothing(region: Store) -> None:
    assert await region.read("Observation", "ob-perf", restriction=DOCTOR) is None
    only_subject = restriction(Grant(patients=P1, sources=B, params=frozenset({"subject"})))
    assert "ob1-pt" not in await visible_ids(region, code_x(only_subject))
    by_performer = restriction(Grant(patients=P1, sources=B, params=frozenset({"performer"})))
    assert await visible_ids(region, code_x(by_performer)) == sorted([*OWN_OBS, "ob-perf"])
    # a grant with no parameters opens only the Patient resources themselves
    no_params = restriction(Grant(patients=P1, sources=B, params=frozenset()))
    assert await visible_ids(region, code_x(no_params)) == OWN_OBS
    assert await visible_ids(region, every("Patient", no_params)) == ["a1", "a2", "b1"]


async def test_other_sources_and_other_patients_stay_hidden(region: Store) -> None:
    for hidden in ("ob2", "oc1"):
        assert await region.read("Observation", hidden, restriction=DOCTOR) is None
    # org-c's record of P1 needs org-c in the grant's sources
    with_c = restriction(Grant(patients=P1, sources=frozenset({"org-b", "org-c"}),
                               params=PARAMS, hidden_labels=SENSITIVE))
    assert "oc1" in await visible_ids(region, code_x(with_c))
    # a grant for P2 opens P2's records, not P1's
    p2 = restriction(Grant(patients=frozenset({"a2", "b2"}), sources=B, params=PARAMS))
    assert await visible_ids(region, code_x(p2)) == sorted([*OWN_OBS, "ob2"])


async def test_a_grants_hidden_labels_stay_hidden(region: Store) -> None:
    assert await region.read("Observation", "ob1-hiv", restriction=DOCTOR) is None
    assert await region.read("Observation", "ob1-psy", restriction=DOCTOR) is None
    hiv_only = restriction(Grant(patients=P1, sources=B, params=PARAMS,
                                 hidden_labels=frozenset({"HIV"})))
    assert await visible_ids(region, code_x(hiv_only)) == sorted(VISIBLE_OBS + ["ob1-psy"])
    everything = restriction(Grant(patients=P1, sources=B, params=PARAMS))
    assert await region.count(code_x(everything)) == len(VISIBLE_OBS) + 2


async def test_types_limit_what_a_grant_opens(region: Store) -> None:
    encounters = restriction(Grant(patients=P1, sources=B, params=PARAMS,
                                   types=frozenset({"Encounter"})))
    assert await visible_ids(region, code_x(encounters)) == OWN_OBS
    assert await visible_ids(region, every("Encounter", encounters)) == ["eb1"]
    assert await region.read("Patient", "b1", restriction=encounters) is None
    nothing = restriction(Grant(patients=P1, sources=B, params=PARAMS, types=frozenset()))
    assert await visible_ids(region, every("Encounter", nothing)) == []
    keys = [("Encounter", "eb1"), ("Observation", "ob1"), ("Patient", "b1")]
    assert [r.id for r in await region.read_many(keys, restriction=encounters)] == ["eb1"]


async def test_several_grants_or_together(region: Store) -> None:
    p2_obs = Grant(patients=frozenset({"b2"}), sources=B, params=frozenset({"subject"}),
                   types=frozenset({"Observation"}))
    glass = Grant(patients=P1, sources=frozenset({"org-c"}), params=PARAMS)
    both = restriction(CONSENT_P1, p2_obs, glass)
    assert await visible_ids(region, code_x(both)) == sorted(VISIBLE_OBS + ["ob2", "oc1"])
    assert await region.count(code_x(both)) == len(VISIBLE_OBS) + 2
    assert await readable(region, "Patient", ["a1", "a2", "b1", "b2"], both) == [
        "a1", "a2", "b1"]
    # a grant only, no base sources: nothing of org-a
    only_grants = Restriction(sources=frozenset(), grants=(CONSENT_P1, p2_obs))
    assert await visible_ids(region, code_x(only_grants)) == sorted(GRANTED_OBS + ["ob2"])


async def test_the_base_rule_still_shows_own_records(region: Store) -> None:
    # the base rule hides no label: the doctor's hospital sees its own HIV record
    assert (await region.read("Observation", "oa1-hiv", restriction=DOCTOR)).id == "oa1-hiv"
    # when the base rule hides a label, a grant does not reopen the caller's own
    # labelled record (org-a is not among the grant's sources)
    strict = restriction(CONSENT_P1, hidden=frozenset({"HIV"}))
    assert await visible_ids(region, code_x(strict)) == ["oa1", "oa2", *GRANTED_OBS]
    # a grant never hides what the base rule shows
    p2 = restriction(Grant(patients=frozenset({"b2"}), sources=B, params=PARAMS))
    assert set(OWN_OBS) <= set(await visible_ids(region, code_x(p2)))


def by_patient(param: str, *ids: str, target_type: str | None = "Patient") -> AnyOf:
    return AnyOf(tuple(ReferenceMatch(param, i, target_type) for i in ids))


async def test_searches_by_the_patient_obey_the_grant(region: Store) -> None:
    """The consent gate's usual search names the linked Patients itself."""
    linked = SearchQuery("Observation", (by_patient("subject", "a1", "b1"),),
                         restriction=DOCTOR)
    assert await visible_ids(region, linked) == ["oa1", "oa1-hiv", "ob1"]
    assert await region.count(linked) == 3
    sorted_linked = SearchQuery("Observation", (by_patient("subject", "a1", "b1"),),
                                sort=(SortKey("_id", "token"),), restriction=DOCTOR)
    assert await visible_ids(region, sorted_linked) == ["oa1", "oa1-hiv", "ob1"]
    # another patient, an untyped reference, a parameter not granted, a
    # granted and a not granted patient together
    cases = [(by_patient("subject", "b2"), []),
             (by_patient("subject", "b1", target_type=None), ["ob1"]),
             (by_patient("performer", "b1"), []),
             (by_patient("subject", "b1", "b2"), ["ob1"])]
    for where, expected in cases:
        query = SearchQuery("Observation", (where,), restriction=DOCTOR)
        assert await visible_ids(region, query) == expected, where
        assert await region.count(query) == len(expected), where
    # a patient reference plus another group: still only what the grant opens
    both = SearchQuery("Observation", (by_patient("subject", "b1"), by_patient("patient", "b1")),
                       restriction=DOCTOR)
    assert await visible_ids(region, both) == []


# ---- chains -----------------------------------------------------------------------

def by_identifier(restr: Restriction, value: str = "110") -> SearchQuery:
    chain = ChainMatch("subject", "Patient", TokenMatch("identifier", value, "urn:id"))
    return SearchQuery("Observation", (AnyOf((chain,)),), restriction=restr)


async def test_chain_targets_obey_grants(region: Store) -> None:
    # targets a1 (own) and b1 (granted): their visible observations
    assert await visible_ids(region, by_identifier(DOCTOR)) == ["oa1", "oa1-hiv", "ob1"]
    assert await region.count(by_identifier(DOCTOR)) == 3
    # a grant that opens b1's observations but not the Patient b1 itself: the
    # chain through b1 must not match (ob1 is still visible by a plain search)
    obs_only = Restriction(sources=frozenset(), grants=(Grant(
        patients=P1, sources=B, params=PARAMS, hidden_labels=SENSITIVE,
        types=frozenset({"Observation"})),))
    assert await visible_ids(region, by_identifier(obs_only)) == []
    assert await region.count(by_identifier(obs_only)) == 0
    plain = SearchQuery("Observation", (AnyOf((ReferenceMatch("subject", "b1", "Patient"),)),),
                        restriction=obs_only)
    assert await visible_ids(region, plain) == ["ob1"]
    # P2's Patient b2 is not opened by the consent for P1
    assert await visible_ids(region, by_identifier(DOCTOR, "220")) == ["oa2"]


# ---- versions and history -----------------------------------------------------

async def test_history_and_read_version_judge_each_version(region: Store,
                                                           records: Records) -> None:
    # org-b relabels ob1 HIV in version 2: version 1 stays visible, 2 does not
    await records.put(region, records.record(
        "Observation", "ob1", version=2, source="org-b", last_updated=ts(100),
        index=entries(refs("subject", "b1"), "HIV")))
    assert await region.read("Observation", "ob1", restriction=DOCTOR) is None
    assert (await region.read_version("Observation", "ob1", 1, restriction=DOCTOR)).version == 1
    assert await region.read_version("Observation", "ob1", 2, restriction=DOCTOR) is None
    assert await region.read_version("Observation", "ob2", 1, restriction=DOCTOR) is None
    versions, total = await region.history(resource_type="Observation", id="ob1", limit=10,
                                           restriction=DOCTOR)
    assert [(r.id, r.version) for r in versions] == [("ob1", 1)] and total == 1

    versions, total = await region.history(resource_type="Observation", limit=10,
                                           restriction=DOCTOR)
    assert sorted((r.id, r.version) for r in versions) == [
        *[(i, 1) for i in VISIBLE_OBS]]
    assert total == len(VISIBLE_OBS)
    versions, total = await region.history(limit=20, restriction=DOCTOR)
    assert sorted((r.resource_type, r.id) for r in versions) == sorted(
        [("Encounter", "eb1"), *[("Observation", i) for i in VISIBLE_OBS],
         ("Patient", "a1"), ("Patient", "a2"), ("Patient", "b1")])
    assert total == len(versions)
    page, total = await region.history(limit=3, offset=3, restriction=DOCTOR)
    assert len(page) == 3 and total == len(versions)


async def test_an_old_version_belongs_to_the_current_patient(region: Store,
                                                             records: Records) -> None:
    """The documented rule: only the current version has index entries, so the
    patient of every version is the one the resource points at now."""
    # ob2 was filed under P2; version 2 corrects it to P1 (b1)
    await records.put(region, records.record(
        "Observation", "ob2", version=2, source="org-b", last_updated=ts(100),
        index=entries(refs("subject", "b1"))))
    versions, total = await region.history(resource_type="Observation", id="ob2", limit=10,
                                           restriction=DOCTOR)
    assert [r.version for r in versions] == [2, 1] and total == 2
    assert (await region.read_version("Observation", "ob2", 1, restriction=DOCTOR)) is not None
    # ob1 moved from P1 to P2: none of its versions is P1's any more
    await records.put(region, records.record(
        "Observation", "ob1", version=2, source="org-b", last_updated=ts(101),
        index=entries(refs("subject", "b2"))))
    assert await region.history(resource_type="Observation", id="ob1", limit=10,
                                restriction=DOCTOR) == ([], 0)
    assert await region.read_version("Observation", "ob1", 1, restriction=DOCTOR) is None


async def test_a_deleted_record_is_opened_by_no_grant(region: Store, records: Records) -> None:
    """A tombstone has no index entries: a grant no longer finds its patient, so
    the record and its history vanish for the grantee (the owner still sees them)."""
    await records.put(region, records.record("Observation", "ob1", version=2, source="org-b",
                                             deleted=True, last_updated=ts(100)))
    assert await region.read("Observation", "ob1", restriction=DOCTOR) is None
    assert await region.history(resource_type="Observation", id="ob1", limit=10,
                                restriction=DOCTOR) == ([], 0)
    owner = Restriction(sources=B)
    assert (await region.read("Observation", "ob1", restriction=owner)).deleted
