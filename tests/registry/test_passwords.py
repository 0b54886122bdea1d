"""Portal password hashing."""

from hie.registry.passwords import check_password, hash_password


def test_hashes_are_salted_and_checked():
    a, b = hash_password("s3cret-pass"), hash_password("s3cret-pass")
    assert a != b and a.startswith("scrypt$16384$8$1$")
    assert check_password("s3cret-pass", a) and check_password("s3cret-pass", b)
    assert not check_password("s3cret-pasS", a)
    assert not check_password("s3cret-pass", None)
    assert not check_password("s3cret-pass", "garbage")
    assert not check_password("s3cret-pass", a.replace("scrypt$", "plain$"))
