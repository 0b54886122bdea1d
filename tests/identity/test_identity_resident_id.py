"""GB 11643 resident ID numbers: check characters, normalisation, dates, masking."""

from __future__ import annotations

from datetime import date

import pytest
from identity.helpers import make_rid

from hie.identity import resident_id as rid
from hie.identity.resident_id import ResidentIdError


def test_check_character_can_be_x_and_digits() -> None:
    assert rid.check_char("11010519491231002") == "X"
    assert rid.check_char("44030619900101001") in "0123456789X"
    # every check character is reachable
    seen = {rid.check_char(f"1101051980030{n:04d}") for n in range(200)}
    assert seen == set("0123456789X")


def test_valid_number_parses_with_birth_date_and_gender() -> None:
    parsed = rid.parse("11010519491231002X")
    assert parsed.number == "11010519491231002X"
    assert parsed.birth_date == date(1949, 12, 31)
    assert parsed.gender == "female"  # sequence 002: even
    assert parsed.region == "110105"
    assert rid.parse(make_rid(seq="123")).gender == "male"


def test_lower_case_x_and_spaces_are_normalised() -> None:
    assert rid.normalise(" 11010519491231002x ") == "11010519491231002X"


def test_wrong_check_character_is_refused_without_showing_the_number() -> None:
    with pytest.raises(ResidentIdError) as exc:
        rid.parse("110105194912310021")
    assert "check character" in str(exc.value)
    assert "110105194912310021" not in str(exc.value)
    assert "110105********0021" in str(exc.value)


@pytest.mark.parametrize("birth", ["19800230", "19801301", "19800000", "18700101", "20991231"])
def test_impossible_birth_dates_are_refused(birth: str) -> None:
    first17 = "110105" + birth + "123"
    with pytest.raises(ResidentIdError, match="birth date"):
        rid.parse(first17 + rid.check_char(first17))


@pytest.mark.parametrize("value", ["", "12345", "11010519491231002Y", "1101051949123100XX",
                                   "00010519491231002X", "１１０１０５１９４９１２３１００２Ｘ"])
def test_malformed_numbers_are_refused(value: str) -> None:
    assert not rid.is_valid(value)


def test_fifteen_digit_number_is_normalised_to_eighteen() -> None:
    assert rid.normalise("110105491231002") == "11010519491231002X"
    assert rid.normalise("440106800304123") == make_rid("440106", "19800304", "123")


def test_fifteen_digit_number_with_impossible_date_is_refused() -> None:
    with pytest.raises(ResidentIdError):
        rid.parse("110105800231123")


def test_mask_hides_the_birth_date_digits() -> None:
    assert rid.mask("11010519491231002X") == "110105********002X"
    assert rid.mask("110105491231002") == "110105******002"
    assert rid.mask("12345678") == "****5678"
    assert "19491231" not in repr(rid.parse("11010519491231002X"))


def test_mask_text_finds_numbers_but_not_longer_digit_runs() -> None:
    text = "id=11010519491231002X old=110105491231002 card=6222021001122334455667"
    assert rid.mask_text(text) == ("id=110105********002X old=110105******002 "
                                   "card=6222021001122334455667")


def test_keyed_hash_is_stable_and_depends_on_the_key() -> None:
    number = make_rid()
    assert rid.keyed_hash(number, b"k1") == rid.keyed_hash(number, b"k1")
    assert rid.keyed_hash(number, b"k1") != rid.keyed_hash(number, b"k2")
    assert number not in rid.keyed_hash(number, b"k1")
