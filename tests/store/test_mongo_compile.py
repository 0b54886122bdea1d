"""The Mongo filter compiler never lets a search value become a query operator."""

from __future__ import annotations

from typing import Any

import pytest
from store.mongo_double import open_double_store

from hie.store.base import WriteRecord
from hie.store.index import IndexEntries
from hie.store.mongo.compile import QueryValueError, compile_query, sort_stages
from hie.store.query import (
    AnyOf,
    ChainMatch,
    DateMatch,
    IdMatch,
    LastUpdatedMatch,
    MissingMatch,
    NumberMatch,
    QuantityMatch,
    ReferenceMatch,
    Restriction,
    SearchQuery,
    SortKey,
    StringMatch,
    TokenMatch,
    UriMatch,
)

HOSTILE = ["$ne", "{\"$gt\": \"\"}", "$where", "a.*", "^", "x$", "\\", "$$ROOT", ".", "(", "|"]

# Every key a compiled filter may contain: the document's field names and the
# operators the compiler itself writes. Nothing else (in particular nothing a
# user typed) may appear as a key.
ALLOWED_KEYS = {
    "_id", "type", "deleted", "source", "labels", "lu", "seq",
    "tok", "str", "dt", "num", "qty", "ref", "uri",
    "tok.p", "str.p", "dt.p", "num.p", "qty.p", "ref.p", "uri.p",
    "p", "s", "c", "n", "e", "lo", "hi", "v", "t", "i", "u",
    "$and", "$or", "$nor", "$elemMatch", "$in", "$nin", "$regex",
    "$gt", "$gte", "$lt", "$lte", "$ne",
}


def _keys(node: Any) -> set[str]:
    if isinstance(node, dict):
        found = set(node)
        for value in node.values():
            found |= _keys(value)
        return found
    if isinstance(node, list | tuple):
        return set().union(*(_keys(v) for v in node)) if node else set()
    return set()


def _all_conditions(v: str) -> list[Any]:
    return [
        TokenMatch(v, v, v), TokenMatch(v, v, None, negate=True), TokenMatch(v, None, v),
        StringMatch(v, v), StringMatch(v, v, "exact"), StringMatch(v, v, "contains"),
        DateMatch(v, "eq", v, v), DateMatch(v, "ne", v, v), DateMatch(v, "ap", v, v),
        NumberMatch(v, "eq", 1.0, 0.5, 1.5), NumberMatch(v, "ne", 1.0, 0.5, 1.5),
        QuantityMatch(v, "ap", 1.0, 0.5, 1.5, v, v),
        ReferenceMatch(v, v, v), ReferenceMatch(v, v),
        UriMatch(v, v), UriMatch(v, v, "below"), UriMatch(v, v, "above"),
        MissingMatch(v, "token", True), MissingMatch(v, "reference", False),
        IdMatch((v, v)), LastUpdatedMatch("ne", v, v), LastUpdatedMatch("gt", v, v),
    ]


@pytest.mark.parametrize("value", HOSTILE)
def test_hostile_values_only_ever_appear_as_values(value: str) -> None:
    chain = ChainMatch(value, value, TokenMatch(value, value))
    query = SearchQuery(
        value,
        where=tuple(AnyOf((c, c)) for c in _all_conditions(value)) + (AnyOf((chain,)),),
        restriction=Restriction(sources=frozenset({value}), hidden_labels=frozenset({value})))
    flt = compile_query(query, {chain: [value]})
    assert _keys(flt) <= ALLOWED_KEYS


@pytest.mark.parametrize("bad", [{"$ne": ""}, ["x"], 5])
def test_non_string_values_are_refused(bad: Any) -> None:
    for cond in (TokenMatch("code", bad), StringMatch("name", bad),
                 ReferenceMatch("subject", bad, "Patient"), UriMatch("url", bad)):
        with pytest.raises(QueryValueError):
            compile_query(SearchQuery("Observation", where=(AnyOf((cond,)),)))


def test_non_numeric_numbers_are_refused() -> None:
    cond = NumberMatch("probability", "gt", {"$gt": 0}, 0, 1)  # type: ignore[arg-type]
    with pytest.raises(QueryValueError):
        compile_query(SearchQuery("RiskAssessment", where=(AnyOf((cond,)),)))


def test_sort_param_starting_with_dollar_stays_a_literal() -> None:
    stages = sort_stages((SortKey("$body", "string"),))
    text = repr(stages)
    assert "{'$literal': '$body'}" in text
    assert "'$$this.p', '$body'" not in text


def _record(id: str, names: list[str], uris: tuple[str, ...] = ()) -> WriteRecord:
    index = IndexEntries(string=[("name", n, n) for n in names],
                         uri=[("url", u) for u in uris])
    return WriteRecord("Patient", id, 1, "2024-01-01T00:00:00.000000", b"{}", index=index)


async def _ids(store: Any, *conds: Any) -> set[str]:
    page = await store.search(SearchQuery("Patient", where=(AnyOf(conds),)), limit=50)
    return {r.id for r in page.resources}


async def test_regex_metacharacters_in_values_match_literally() -> None:
    store = await open_double_store()

    async def fill(tx: Any) -> None:
        await tx.put(_record("dot", ["a.c"], ("http://x.org/a",)))
        await tx.put(_record("abc", ["abc", "zz(1)"], ("http://xyorg/a",)))
        await tx.put(_record("star", ["a.*"]))

    await store.transact(fill)
    assert await _ids(store, StringMatch("name", "a.")) == {"dot", "star"}
    assert await _ids(store, StringMatch("name", ".*")) == set()
    assert await _ids(store, StringMatch("name", ".*", "contains")) == {"star"}
    assert await _ids(store, StringMatch("name", "(1)", "contains")) == {"abc"}
    assert await _ids(store, StringMatch("name", "$ne", "exact")) == set()
    assert await _ids(store, UriMatch("url", "http://x.org", "below")) == {"dot"}
    assert await _ids(store, TokenMatch("name", ".*")) == set()
    await store.close()


def test_regex_patterns_never_contain_a_nul_byte() -> None:
    # MongoDB refuses a pattern with an embedded NUL; it is spelt as an escape instead.
    flt = compile_query(SearchQuery("Patient", where=(
        AnyOf((StringMatch("name", "a\x00b", "contains"), UriMatch("url", "x\x00", "below"))),)))
    patterns = [term[key]["$elemMatch"][field]["$regex"]
                for term, key, field in ((flt["$and"][0]["$or"][0], "str", "n"),
                                         (flt["$and"][0]["$or"][1], "uri", "u"))]
    assert patterns == ["a\\x00b", "^x\\x00"]


async def test_nul_in_a_value_still_matches_literally() -> None:
    store = await open_double_store()
    await store.transact(lambda tx: tx.put(_record("nul", ["a\x00b"])))
    assert await _ids(store, StringMatch("name", "\x00b", "contains")) == {"nul"}
    assert await _ids(store, StringMatch("name", "a\x00", "start")) == {"nul"}
    assert await _ids(store, StringMatch("name", "\x00c", "contains")) == set()
    await store.close()


def test_values_of_one_parameter_share_one_in() -> None:
    refs = AnyOf(tuple(ReferenceMatch("subject", f"p{i}", "Patient") for i in (3, 1, 2)))
    codes = AnyOf((TokenMatch("code", "b", "http://loinc.org"),
                   TokenMatch("code", "a", "http://loinc.org"), TokenMatch("code", "z")))
    flt = compile_query(SearchQuery("Observation", where=(refs, codes)))
    assert flt["$and"][0] == {"ref": {"$elemMatch": {
        "p": "subject", "i": {"$in": ["p1", "p2", "p3"]}, "t": "Patient"}}}
    assert flt["$and"][1] == {"$or": [
        {"tok": {"$elemMatch": {"p": "code", "s": "http://loinc.org", "c": {"$in": ["a", "b"]}}}},
        {"tok": {"$elemMatch": {"p": "code", "c": "z"}}}]}
