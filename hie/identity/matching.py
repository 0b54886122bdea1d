"""Demographic matching: what of a Patient is compared, how, and how much each
agreement weighs.

A Patient is reduced to :class:`Demographics` (normalised names, birth date,
gender, phones, addresses). Two of them are compared field by field; each
field's outcome has a weight in the spirit of Fellegi–Sunter (agreement on a
rare, reliable field adds much; disagreement on a stable field subtracts much)
and the sum is compared with the thresholds of a :class:`MatchPolicy`.

Names: a name containing Chinese characters is compared whole (family and
given together, spaces and the middle dot of minority names removed), because
the split between family and given name is not reliable in hospital systems
(复姓 such as 欧阳 are often split wrongly). Pinyin and other Latin names are
folded (case, accents, apostrophes, hyphens) and compared as family+given in
either order, since hospitals write pinyin names both ways. Chinese and Latin
names are not compared with each other: a Patient usually carries both, and
each hospital's pair is compared script by script.

*Blocking keys* choose the candidates: only Patients sharing at least one key
with the incoming one are scored, and the keys are index tokens, so finding
candidates is an index lookup, never a scan.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field
from typing import Any, Literal

Outcome = Literal["exact", "close", "different", "unknown"]


@dataclass(frozen=True, slots=True)
class MatchPolicy:
    """Weights and thresholds of demographic matching.

    With the defaults, name + birth date + gender alone (16) go to review: in a
    region of millions, two people with a common name share a birthday often
    enough. One more agreeing field (phone or address) links automatically.
    """

    #: score at or above which a Patient is linked without review
    auto_link: float = 18.0
    #: score at or above which (and below ``auto_link``) a review item is queued;
    #: below it the Patient gets a new person without review
    review: float = 12.0
    name: tuple[float, float, float] = (8.0, 4.0, -6.0)  # exact, close, different
    birth_date: tuple[float, float, float] = (7.0, 2.0, -8.0)
    gender: tuple[float, float] = (1.0, -5.0)  # same, different
    phone: tuple[float, float] = (6.0, -1.0)
    address: tuple[float, float, float] = (3.0, 1.5, 0.0)
    #: most candidates scored for one incoming Patient
    max_candidates: int = 50


DEFAULT_POLICY = MatchPolicy()


@dataclass(frozen=True, slots=True)
class Demographics:
    """The comparable, normalised demographics of one Patient."""

    cjk_names: tuple[str, ...] = ()
    # each Latin name as (family, given), folded; given may be ""
    latin_names: tuple[tuple[str, str], ...] = ()
    birth_date: str | None = None  # YYYY-MM-DD (or a partial date as written)
    gender: str | None = None  # male | female (other/unknown: None)
    phones: tuple[str, ...] = ()
    addresses: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        """A compact form for the link document (only non-empty fields)."""
        out: dict[str, Any] = {}
        if self.cjk_names:
            out["cjk"] = list(self.cjk_names)
        if self.latin_names:
            out["latin"] = [list(n) for n in self.latin_names]
        if self.birth_date:
            out["birthDate"] = self.birth_date
        if self.gender:
            out["gender"] = self.gender
        if self.phones:
            out["phones"] = list(self.phones)
        if self.addresses:
            out["addresses"] = list(self.addresses)
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Demographics:
        return cls(cjk_names=tuple(data.get("cjk", ())),
                   latin_names=tuple((f, g) for f, g in data.get("latin", ())),
                   birth_date=data.get("birthDate"), gender=data.get("gender"),
                   phones=tuple(data.get("phones", ())),
                   addresses=tuple(data.get("addresses", ())))


# -- normalisation ------------------------------------------------------------

_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002ffff]")
_NAME_NOISE = re.compile(r"[\s·•・.\-'’‘`]+")
_NOT_LETTER = re.compile(r"[^a-z]+")
_ADDRESS_NOISE = re.compile(r"[\s,，.。;；:：、()（）\-#·]+")


def has_cjk(text: str) -> bool:
    return _CJK.search(text) is not None


def fold_latin(text: str) -> str:
    """Case- and accent-folded letters only: ``Xiù'yīng`` → ``xiuying``."""
    decomposed = unicodedata.normalize("NFKD", text)
    stripped = "".join(c for c in decomposed if not unicodedata.combining(c))
    return _NOT_LETTER.sub("", stripped.casefold().replace("ß", "ss"))


def _name_parts(name: dict[str, Any]) -> tuple[str, str, str]:
    family = name.get("family") if isinstance(name.get("family"), str) else ""
    given_list = name.get("given") if isinstance(name.get("given"), list) else []
    given = " ".join(g for g in given_list if isinstance(g, str))
    text = name.get("text") if isinstance(name.get("text"), str) else ""
    return family or "", given, text or ""


def normalise_names(names: Any) -> tuple[tuple[str, ...], tuple[tuple[str, str], ...]]:
    """Chinese whole names and folded Latin (family, given) pairs of a
    Patient's ``name`` list (``old`` names are skipped)."""
    cjk: list[str] = []
    latin: list[tuple[str, str]] = []
    for name in names if isinstance(names, list) else []:
        if not isinstance(name, dict) or name.get("use") in ("old", "anonymous"):
            continue
        family, given, text = _name_parts(name)
        whole = family + given if (family or given) else text
        if not whole:
            continue
        if has_cjk(whole):
            key = _NAME_NOISE.sub("", unicodedata.normalize("NFKC", whole))
            if key and key not in cjk:
                cjk.append(key)
            continue
        if family or given:
            pair = (fold_latin(family), fold_latin(given))
        else:  # text only: the last word as family ("Anna Smith"); order is
            words = text.split()  # compared both ways anyway
            pair = (fold_latin(words[-1]), fold_latin("".join(words[:-1])))
        if any(pair) and pair not in latin:
            latin.append(pair)
    return tuple(cjk), tuple(latin)


def normalise_phone(value: str) -> str | None:
    """Digits only, without the country code ``+86``/``0086``; None if too short."""
    digits = re.sub(r"[^0-9]", "", value)
    for prefix in ("0086", "86"):
        if digits.startswith(prefix) and len(digits) - len(prefix) >= 10:
            digits = digits[len(prefix):]
            break
    return digits if len(digits) >= 7 else None


def normalise_address(address: dict[str, Any]) -> str | None:
    """One comparable string: the text (or the parts joined), NFKC-folded,
    without spaces or punctuation."""
    text = address.get("text") if isinstance(address.get("text"), str) else ""
    if not text:
        lines = [x for x in address.get("line", []) if isinstance(x, str)] \
            if isinstance(address.get("line"), list) else []
        parts = [address.get(k) for k in ("state", "city", "district")]
        text = "".join(p for p in parts if isinstance(p, str)) + "".join(lines)
    key = _ADDRESS_NOISE.sub("", unicodedata.normalize("NFKC", text).casefold())
    return key or None


def demographics(patient: dict[str, Any]) -> Demographics:
    """Reduce a Patient resource to its comparable demographics."""
    cjk, latin = normalise_names(patient.get("name"))
    phones: list[str] = []
    for t in patient.get("telecom", []) if isinstance(patient.get("telecom"), list) else []:
        if isinstance(t, dict) and t.get("system") in ("phone", "sms", None) \
                and isinstance(t.get("value"), str):
            p = normalise_phone(t["value"])
            if p and p not in phones:
                phones.append(p)
    addresses: list[str] = []
    for a in patient.get("address", []) if isinstance(patient.get("address"), list) else []:
        if isinstance(a, dict) and a.get("use") != "old":
            key = normalise_address(a)
            if key and key not in addresses:
                addresses.append(key)
    birth = patient.get("birthDate")
    gender = patient.get("gender")
    return Demographics(
        cjk_names=cjk, latin_names=latin,
        birth_date=birth[:10] if isinstance(birth, str) and birth else None,
        gender=gender if gender in ("male", "female") else None,
        phones=tuple(phones), addresses=tuple(addresses))


# -- blocking -------------------------------------------------------------------

def _latin_key(pair: tuple[str, str]) -> str:
    family, given = pair
    return min(family + given, given + family)


def blocking_keys(d: Demographics) -> list[str]:
    """Index tokens under which a Patient is found as a candidate.

    Whole name + birth date catches the usual duplicate; name + birth year
    catches a mistyped day or month; phone catches a mistyped name or date.
    """
    keys: list[str] = []
    names = [f"c:{n}" for n in d.cjk_names] + [f"l:{_latin_key(p)}" for p in d.latin_names]
    for n in names:
        if d.birth_date:
            keys.append(f"nb:{n}|{d.birth_date}")
            keys.append(f"ny:{n}|{d.birth_date[:4]}")
        else:
            keys.append(f"n:{n}")
    keys += [f"p:{p}" for p in d.phones]
    return list(dict.fromkeys(keys))


# -- comparison -----------------------------------------------------------------

def levenshtein(a: str, b: str, limit: int = 3) -> int:
    """Edit distance of two short strings (stops counting past ``limit``)."""
    if abs(len(a) - len(b)) > limit:
        return limit + 1
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        if min(cur) > limit:
            return limit + 1
        prev = cur
    return prev[-1]


def compare_names(a: Demographics, b: Demographics) -> Outcome:
    """The best outcome over all same-script name pairs."""
    best: Outcome = "unknown"
    for x in a.cjk_names:
        for y in b.cjk_names:
            if x == y:
                return "exact"
            # one character wrong (a homophone typed instead) in a name of 3+
            close = len(x) == len(y) and len(x) >= 3 and levenshtein(x, y, 1) <= 1
            best = "close" if close or best == "close" else "different"
    for fx, gx in a.latin_names:
        for fy, gy in b.latin_names:
            if (fx, gx) == (fy, gy) or (fx, gx) == (gy, fy) \
                    or fx + gx in (fy + gy, gy + fy):
                return "exact"
            wx = fx + gx
            allowed = 1 if len(wx) < 8 else 2
            distance = min(levenshtein(wx, fy + gy, allowed), levenshtein(wx, gy + fy, allowed))
            # a typo in the given name, the family name agreeing (either order)
            close = distance <= allowed and fx in (fy, gy)
            best = "close" if close or best == "close" else "different"
    return best


def compare_birth_dates(a: str | None, b: str | None) -> Outcome:
    """Exact; close: day and month swapped or one digit wrong; else different."""
    if not a or not b:
        return "unknown"
    if a == b:
        return "exact"
    if len(a) != 10 or len(b) != 10:
        return "close" if a[:len(b)] == b[:len(a)] else "different"
    if a[:4] == b[:4] and a[5:7] == b[8:10] and a[8:10] == b[5:7]:
        return "close"
    if sum(x != y for x, y in zip(a, b, strict=True)) == 1:
        return "close"
    return "different"


def _any_equal(a: tuple[str, ...], b: tuple[str, ...]) -> Outcome:
    if not a or not b:
        return "unknown"
    return "exact" if set(a) & set(b) else "different"


def _bigrams(s: str) -> set[str]:
    return {s[i:i + 2] for i in range(len(s) - 1)} or {s}


def compare_addresses(a: tuple[str, ...], b: tuple[str, ...]) -> Outcome:
    """Exact, close (character-bigram Jaccard of at least 0.8) or different."""
    if not a or not b:
        return "unknown"
    if set(a) & set(b):
        return "exact"
    for x in a:
        bx = _bigrams(x)
        for y in b:
            by = _bigrams(y)
            if len(bx & by) / len(bx | by) >= 0.8:
                return "close"
    return "different"


@dataclass(frozen=True, slots=True)
class Score:
    """A comparison: the total and each field's outcome (for the review queue)."""

    total: float
    fields: dict[str, Outcome] = field(default_factory=dict)


def score(a: Demographics, b: Demographics, policy: MatchPolicy = DEFAULT_POLICY) -> Score:
    """Compare two Patients' demographics."""
    outcomes: dict[str, Outcome] = {
        "name": compare_names(a, b),
        "birthDate": compare_birth_dates(a.birth_date, b.birth_date),
        "gender": "unknown" if not a.gender or not b.gender
        else ("exact" if a.gender == b.gender else "different"),
        "phone": _any_equal(a.phones, b.phones),
        "address": compare_addresses(a.addresses, b.addresses),
    }
    three = {"name": policy.name, "birthDate": policy.birth_date, "address": policy.address}
    two = {"gender": policy.gender, "phone": policy.phone}
    total = 0.0
    for name, outcome in outcomes.items():
        if outcome == "unknown":
            continue
        if name in three:
            exact, close, different = three[name]
            total += {"exact": exact, "close": close, "different": different}[outcome]
        else:
            same, different = two[name]
            total += same if outcome == "exact" else different
    return Score(total=total, fields=outcomes)
