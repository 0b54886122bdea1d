"""Demographic normalisation, blocking keys and scores."""

from __future__ import annotations

from identity.helpers import patient

from hie.identity.matching import (
    DEFAULT_POLICY,
    blocking_keys,
    compare_birth_dates,
    demographics,
    fold_latin,
    normalise_phone,
    score,
)

P = DEFAULT_POLICY


def total(a: dict, b: dict) -> float:
    return score(demographics(a), demographics(b)).total


def test_chinese_names_are_compared_whole_without_spaces_or_middle_dots() -> None:
    a = demographics(patient(name="阿依古丽·买买提"))
    b = demographics({"name": [{"family": "阿依古丽", "given": ["买买提"]}]})
    assert a.cjk_names == ("阿依古丽买买提",) == b.cjk_names
    # a family name split wrongly (复姓) still compares equal
    assert demographics({"name": [{"family": "欧", "given": ["阳娜娜"]}]}).cjk_names == \
        demographics({"name": [{"family": "欧阳", "given": ["娜娜"]}]}).cjk_names


def test_latin_names_are_folded_and_compared_in_either_order() -> None:
    assert fold_latin("Xiù'yīng") == "xiuying"
    a = patient(name=None, pinyin=("Wang", "Xiu'ying"))
    b = patient(name=None, pinyin=("XIUYING", "wáng"))
    assert score(demographics(a), demographics(b)).fields["name"] == "exact"
    text_only = {"name": [{"text": "Wang Xiuying"}]}
    assert score(demographics(a), demographics(text_only)).fields["name"] == "exact"


def test_chinese_and_latin_names_are_not_compared_with_each_other() -> None:
    a = patient(name="王秀英", pinyin=None)
    b = patient(name=None, pinyin=("Wang", "Xiuying"))
    assert score(demographics(a), demographics(b)).fields["name"] == "unknown"


def test_phone_numbers_lose_country_codes_and_punctuation() -> None:
    assert normalise_phone("+86 138-1234-5678") == "13812345678"
    assert normalise_phone("0086 13812345678") == "13812345678"
    assert normalise_phone("(010) 6512 3456") == "01065123456"
    assert normalise_phone("123") is None


def test_birth_dates_with_swapped_day_and_month_or_one_digit_are_close() -> None:
    assert compare_birth_dates("1980-03-04", "1980-03-04") == "exact"
    assert compare_birth_dates("1980-03-04", "1980-04-03") == "close"
    assert compare_birth_dates("1980-03-04", "1980-03-05") == "close"
    assert compare_birth_dates("1980-03-04", "1981-05-04") == "different"
    assert compare_birth_dates("1980-03-04", None) == "unknown"


def test_everything_agreeing_links_automatically() -> None:
    assert total(patient(hospital="a"), patient(hospital="b")) >= P.auto_link


def test_name_birth_date_and_gender_alone_go_to_review() -> None:
    a = patient(phone=None, address=None)
    b = patient(phone=None, address=None)
    assert P.review <= total(a, b) < P.auto_link


def test_one_more_field_agreeing_links() -> None:
    assert total(patient(address=None), patient(address=None)) >= P.auto_link
    assert total(patient(phone=None), patient(phone=None)) >= P.auto_link


def test_a_homophone_typo_with_matching_phone_still_links() -> None:
    a, b = patient(name="王秀英"), patient(name="王秀瑛", address="上海市徐汇区中山路9号")
    s = score(demographics(a), demographics(b))
    assert s.fields["name"] == "close"
    assert s.total >= P.auto_link


def test_twins_sharing_birth_date_phone_and_address_are_not_linked() -> None:
    a, b = patient(name="李明", gender="male"), patient(name="李亮", gender="male")
    assert total(a, b) < P.review


def test_different_birth_date_outweighs_same_name() -> None:
    a = patient(phone=None, address=None)
    b = patient(birth="1962-11-20", phone=None, address=None)
    assert total(a, b) < P.review


def test_blocking_keys_cover_name_with_date_and_year_and_phone() -> None:
    keys = blocking_keys(demographics(patient(pinyin=("Wang", "Xiuying"))))
    assert "nb:c:王秀英|1980-03-04" in keys
    assert "ny:c:王秀英|1980" in keys
    assert "nb:l:wangxiuying|1980-03-04" in keys
    assert "p:13812345678" in keys
    swapped = blocking_keys(demographics(patient(name=None, pinyin=("Xiuying", "Wang"))))
    assert "nb:l:wangxiuying|1980-03-04" in swapped


def test_patient_without_anything_has_no_blocking_keys() -> None:
    empty = demographics({"resourceType": "Patient"})
    assert blocking_keys(empty) == []
    assert score(empty, empty).total == 0
