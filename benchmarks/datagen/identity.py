"""Who the generated patients are: names, resident ID numbers, phones, addresses.

Everything here is drawn from a caller's :class:`random.Random`, so a seed fixes
the whole population. The tables are small on purpose: enough variety for
realistic search selectivity (family names follow roughly the real frequency,
so 王/李/张 are common and 欧阳 is rare), not a census.

Resident ID numbers follow GB 11643-1999: a 6-digit administrative region code
(GB/T 2260), the birth date ``YYYYMMDD``, a 3-digit sequence whose parity gives
the sex (odd: male), and an ISO 7064 MOD 11-2 check character.

>>> resident_id_check_char("11010519491231002")
'X'
>>> is_valid_resident_id("11010519491231002X")
True
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import date, timedelta

#: Identifier system of resident ID numbers (the OID of the PRC resident
#: identity card, as used by Chinese health-information standards).
RESIDENT_ID_SYSTEM = "urn:oid:2.16.156.10011.1.1"
#: FHIR's conventional system for passport numbers of a country (ISO 3166 alpha-3).
PASSPORT_SYSTEM = "http://hl7.org/fhir/sid/passport-{country}"
V2_0203 = "http://terminology.hl7.org/CodeSystem/v2-0203"

_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_CHECK_CHARS = "10X98765432"


def resident_id_check_char(first17: str) -> str:
    """Return the ISO 7064 MOD 11-2 check character of the first 17 digits."""
    if len(first17) != 17 or not first17.isdigit():
        raise ValueError("a resident ID number starts with exactly 17 digits")
    total = sum(int(d) * w for d, w in zip(first17, _WEIGHTS, strict=True))
    return _CHECK_CHARS[total % 11]


def is_valid_resident_id(value: str) -> bool:
    """True when ``value`` is 18 characters with a valid birth date and check character."""
    if len(value) != 18 or not value[:17].isdigit():
        return False
    try:
        date(int(value[6:10]), int(value[10:12]), int(value[12:14]))
    except ValueError:
        return False
    return resident_id_check_char(value[:17]) == value[17].upper()


@dataclass(frozen=True, slots=True)
class Region:
    """A county-level division: GB/T 2260 code, names, and a postal code in it."""

    code: str
    province: str
    city: str
    district: str
    postal_code: str


REGIONS: tuple[Region, ...] = (
    Region("110101", "北京市", "北京市", "东城区", "100010"),
    Region("110105", "北京市", "北京市", "朝阳区", "100020"),
    Region("310104", "上海市", "上海市", "徐汇区", "200030"),
    Region("310115", "上海市", "上海市", "浦东新区", "200120"),
    Region("440106", "广东省", "广州市", "天河区", "510630"),
    Region("440305", "广东省", "深圳市", "南山区", "518052"),
    Region("330106", "浙江省", "杭州市", "西湖区", "310013"),
    Region("320102", "江苏省", "南京市", "玄武区", "210018"),
    Region("510107", "四川省", "成都市", "武侯区", "610041"),
    Region("420106", "湖北省", "武汉市", "武昌区", "430061"),
    Region("610113", "陕西省", "西安市", "雁塔区", "710061"),
    Region("430104", "湖南省", "长沙市", "岳麓区", "410006"),
    Region("370102", "山东省", "济南市", "历下区", "250011"),
    Region("120101", "天津市", "天津市", "和平区", "300041"),
    Region("500103", "重庆市", "重庆市", "渝中区", "400010"),
)

_STREETS = ("人民路", "解放路", "中山路", "建设路", "和平路", "新华路", "长江路",
            "胜利路", "文化路", "青年路", "朝阳路", "花园路")

# (hanzi, pinyin, relative frequency)
_FAMILY: tuple[tuple[str, str, int], ...] = (
    ("王", "Wang", 72), ("李", "Li", 70), ("张", "Zhang", 66), ("刘", "Liu", 52),
    ("陈", "Chen", 45), ("杨", "Yang", 33), ("黄", "Huang", 24), ("赵", "Zhao", 20),
    ("吴", "Wu", 19), ("周", "Zhou", 19), ("徐", "Xu", 15), ("孙", "Sun", 14),
    ("马", "Ma", 13), ("朱", "Zhu", 13), ("胡", "Hu", 12), ("郭", "Guo", 11),
    ("何", "He", 10), ("林", "Lin", 10), ("高", "Gao", 10), ("罗", "Luo", 9),
    ("郑", "Zheng", 9), ("梁", "Liang", 8), ("谢", "Xie", 7), ("宋", "Song", 6),
    ("唐", "Tang", 6), ("韩", "Han", 5), ("冯", "Feng", 5), ("邓", "Deng", 5),
    ("曹", "Cao", 5), ("欧阳", "Ouyang", 1), ("司马", "Sima", 1),
)
_GIVEN_FEMALE = (("秀", "xiu"), ("英", "ying"), ("丽", "li"), ("敏", "min"), ("静", "jing"),
                 ("芳", "fang"), ("娟", "juan"), ("霞", "xia"), ("燕", "yan"), ("玲", "ling"),
                 ("桂", "gui"), ("兰", "lan"), ("婷", "ting"), ("雪", "xue"), ("慧", "hui"),
                 ("佳", "jia"), ("欣", "xin"), ("怡", "yi"), ("梅", "mei"), ("红", "hong"))
_GIVEN_MALE = (("伟", "wei"), ("强", "qiang"), ("磊", "lei"), ("军", "jun"), ("勇", "yong"),
               ("杰", "jie"), ("涛", "tao"), ("明", "ming"), ("超", "chao"), ("刚", "gang"),
               ("平", "ping"), ("辉", "hui"), ("鹏", "peng"), ("华", "hua"), ("飞", "fei"),
               ("鑫", "xin"), ("波", "bo"), ("斌", "bin"), ("宇", "yu"), ("浩", "hao"),
               ("建", "jian"), ("国", "guo"), ("志", "zhi"), ("文", "wen"))
# Foreign residents: (family, given, country of passport)
_FOREIGN_FAMILY = (("Smith", "GBR"), ("Johnson", "USA"), ("Müller", "DEU"), ("Schmidt", "DEU"),
                   ("Dubois", "FRA"), ("Martin", "FRA"), ("Rossi", "ITA"), ("García", "ESP"),
                   ("Silva", "BRA"), ("Ivanova", "RUS"), ("Nguyen", "VNM"), ("Brown", "AUS"))
_FOREIGN_GIVEN_FEMALE = ("Anna", "Maria", "Sophie", "Emma", "Olga", "Laura", "Claire")
_FOREIGN_GIVEN_MALE = ("James", "Peter", "Lukas", "David", "Thomas", "Marco", "Daniel")
_MOBILE_PREFIXES = ("130", "131", "132", "135", "136", "137", "138", "139", "150", "151",
                    "152", "155", "158", "159", "177", "180", "186", "187", "188", "199")


@dataclass(slots=True)
class Person:
    """One real person of the region, before any hospital has seen them.

    ``resident_id`` is None for foreign residents (who carry a passport number
    instead); ``hospitals`` lists the codes of hospitals that already hold a
    record (an MRN) of this person.
    """

    gender: str  # "male" | "female"
    birth_date: date
    names: list[dict]
    identifiers: list[dict]
    resident_id: str | None
    phone: str
    address: dict
    hospitals: dict[str, str] = field(default_factory=dict)  # hospital code -> MRN
    traits: dict = field(default_factory=dict)  # height, weight, chronic conditions


def _pinyin_given(syllables: list[str]) -> str:
    # Hanyu Pinyin writes an apostrophe before a syllable starting with a/o/e.
    out = syllables[0]
    for s in syllables[1:]:
        out += ("'" if s[0] in "aoe" else "") + s
    return out.capitalize()


def _chinese_names(rng: random.Random, gender: str) -> list[dict]:
    family, family_py, _ = rng.choices(_FAMILY, weights=[f[2] for f in _FAMILY])[0]
    table = _GIVEN_MALE if gender == "male" else _GIVEN_FEMALE
    chars = rng.sample(table, k=rng.choice((1, 2, 2, 2)))
    given = "".join(c for c, _ in chars)
    given_py = _pinyin_given([p for _, p in chars])
    return [
        {"use": "official", "text": family + given, "family": family, "given": [given]},
        {"use": "usual", "text": f"{family_py} {given_py}", "family": family_py,
         "given": [given_py]},
    ]


def birth_date_for_age(rng: random.Random, today: date) -> date:
    """Draw a birth date; ages skew old, as hospital populations do."""
    band = rng.choices(((0, 14), (15, 39), (40, 64), (65, 94)), weights=(10, 25, 38, 27))[0]
    age_days = rng.randint(band[0] * 365, band[1] * 365 + 364)
    return today - timedelta(days=age_days)


def _mobile(rng: random.Random) -> str:
    return rng.choice(_MOBILE_PREFIXES) + f"{rng.randrange(10**8):08d}"


def _address(rng: random.Random, region: Region) -> dict:
    street = rng.choice(_STREETS)
    line = (f"{street}{rng.randint(1, 400)}号{rng.randint(1, 30)}栋"
            f"{rng.randint(1, 4)}单元{rng.randint(1, 28)}{rng.randint(1, 4):02d}室")
    text = f"{region.province}{'' if region.city == region.province else region.city}" \
           f"{region.district}{line}"
    return {"use": "home", "type": "physical", "text": text, "line": [line],
            "city": region.city, "district": region.district, "state": region.province,
            "postalCode": region.postal_code, "country": "CN"}


class PersonFactory:
    """Draws people with unique resident ID numbers from one random stream."""

    def __init__(self, rng: random.Random, today: date) -> None:
        self._rng = rng
        self._today = today
        self._used_ids: set[str] = set()

    def resident_id(self, region: Region, birth: date, gender: str) -> str:
        """Return a fresh, valid resident ID number (never one handed out before)."""
        while True:
            seq = self._rng.randrange(500) * 2 + (1 if gender == "male" else 0)
            first17 = f"{region.code}{birth:%Y%m%d}{seq:03d}"
            value = first17 + resident_id_check_char(first17)
            if value not in self._used_ids:
                self._used_ids.add(value)
                return value

    def person(self) -> Person:
        """Draw one person: 96 % Chinese citizens, the rest foreign residents."""
        rng = self._rng
        gender = rng.choice(("male", "female"))
        birth = birth_date_for_age(rng, self._today)
        home = rng.choice(REGIONS)
        if rng.random() < 0.96:
            # Most people still live where they were first registered.
            origin = home if rng.random() < 0.8 else rng.choice(REGIONS)
            rid = self.resident_id(origin, birth, gender)
            names = _chinese_names(rng, gender)
            identifiers = [{
                "use": "official",
                "type": {"coding": [{"system": V2_0203, "code": "NI",
                                     "display": "National unique individual identifier"}],
                         "text": "居民身份证"},
                "system": RESIDENT_ID_SYSTEM, "value": rid,
            }]
        else:
            rid = None
            family, country = rng.choice(_FOREIGN_FAMILY)
            given = rng.choice(_FOREIGN_GIVEN_MALE if gender == "male" else _FOREIGN_GIVEN_FEMALE)
            names = [{"use": "official", "text": f"{given} {family}", "family": family,
                      "given": [given]}]
            passport = f"{rng.choice('CEGKPX')}{rng.randrange(10**8):08d}"
            identifiers = [{
                "use": "official",
                "type": {"coding": [{"system": V2_0203, "code": "PPN",
                                     "display": "Passport number"}], "text": "护照"},
                "system": PASSPORT_SYSTEM.format(country=country), "value": passport,
            }]
        return Person(gender=gender, birth_date=birth, names=names, identifiers=identifiers,
                      resident_id=rid, phone=_mobile(rng), address=_address(rng, home))
