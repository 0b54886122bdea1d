"""Choose what drives a search by probing its conditions' index ranges.

The rank of :mod:`.conditions` is a guess made without data; SQLite's own
planner cannot help either, because it does not see inside the seq sets. So
before a search the store counts, per condition, its index rows — stopping at
:data:`PROBE_CAP`, so a probe never reads more than that many index entries:

* the condition with the fewest rows drives (``Observation?status=final&
  code=X`` is driven by ``code``, whatever the ranks say);
* when every condition reaches the cap and the caller wants the default order,
  no condition drives: the type index is walked in ``seq`` order with every
  condition as a filter and the walk stops at the page's end. With each
  condition matching at least ``PROBE_CAP`` resources, a page of 50 is found
  after about ``50 × resources-of-the-type / PROBE_CAP`` rows, instead of
  materialising every match of the broadest-but-one condition;
* sorted searches and counts need every match anyway, so they never walk.
"""

from __future__ import annotations

import sqlite3

from hie.store.query import SearchQuery
from hie.store.sqlite.compile import Driver, compile_probes

#: Most index entries one probe reads.
PROBE_CAP = 4000


def choose_driver(conn: sqlite3.Connection, query: SearchQuery, *, walk: bool,
                  after_seq: int = 0, max_seq: int | None = None) -> Driver:
    """What should drive ``query``; ``walk``: a type-index walk is acceptable
    (default order, one page wanted).

    Probes run in rank order and each later one counts only up to the best
    count so far, so the usual case (a selective condition ranked first) costs
    one small probe and a few cut-short ones.
    """
    probes = sorted(compile_probes(query, after_seq=after_seq, max_seq=max_seq),
                    key=lambda p: p.rank)
    if not probes:
        return "rank"
    if len(probes) == 1 and not walk:
        return probes[0].position
    best_rows, best = PROBE_CAP, probes[0].position
    for probe in probes:
        rows = conn.execute(probe.statement.sql, probe.run_params(best_rows)).fetchone()[0]
        if rows < best_rows:
            best_rows, best = rows, probe.position
            if rows == 0:
                break
    if walk and best_rows >= PROBE_CAP:
        return "walk"
    return best
