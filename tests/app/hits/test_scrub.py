import pytest

from app.hits.scrub import page_utm, referrer_host, scrub_page


def test_a_plain_path_is_kept() -> None:
    assert scrub_page("/pricing") == "/pricing"


def test_a_message_id_is_kept_with_its_short_numbers() -> None:
    assert scrub_page("newsletter-2025-07") == "newsletter-2025-07"


def test_a_full_url_is_reduced_to_its_path() -> None:
    assert scrub_page("https://shop.example/pricing?x=1") == "/pricing"


def test_a_full_url_without_a_path_becomes_the_root() -> None:
    assert scrub_page("https://shop.example") == "/"


def test_the_fragment_is_dropped() -> None:
    assert scrub_page("/docs/setup#step-2") == "/docs/setup"


def test_a_page_keeps_its_utm_parameters_and_no_other_query() -> None:
    raw = "/pricing?utm_source=news&session=abc&utm_medium=e%20mail&ref=x&utm_campaign=july+sale"
    assert (
        scrub_page(raw) == "/pricing?utm_source=news&utm_medium=e%20mail&utm_campaign=july%20sale"
    )
    assert scrub_page("https://shop.example/a?utm_source=x") == "/a?utm_source=x"


def test_the_utm_parameters_of_a_page_are_read_with_their_names_in_lower_case() -> None:
    raw = "/pricing?utm_source=news&session=abc&UTM_Medium=e%20mail&ref=x&utm_campaign=july+sale"
    assert page_utm(raw) == (
        ("utm_source", "news"),
        ("utm_medium", "e mail"),
        ("utm_campaign", "july sale"),
    )
    assert page_utm("https://shop.example/a?utm_term=x#utm_content=y") == (("utm_term", "x"),)


def test_a_page_without_utm_parameters_has_none() -> None:
    assert page_utm("/search?q=shoes&page=2") == ()
    assert page_utm("newsletter-2025-07") == ()
    assert page_utm("/a?utm_source=&utm_medium=%20") == ()  # blanks fill nothing


def test_the_last_utm_parameter_of_a_name_wins() -> None:
    assert page_utm("/?utm_source=a&utm_source=b") == (("utm_source", "b"),)


def test_a_long_utm_value_is_cut_and_one_that_cannot_be_stored_left_out() -> None:
    assert page_utm("/?utm_content=" + "y" * 300) == (("utm_content", "y" * 128),)
    assert page_utm("/?utm_source=a%00b&utm_term=%2500&utm_medium=ok") == (("utm_medium", "ok"),)


def test_a_query_without_utm_parameters_is_dropped_entirely() -> None:
    assert scrub_page("/search?q=shoes&page=2") == "/search"


def test_a_percent_encoded_email_is_masked() -> None:
    assert scrub_page("/unsubscribe/alice%40example.test") == "/unsubscribe/[email]"


def test_a_plain_email_is_masked() -> None:
    assert scrub_page("/u/bob.smith+news@mail.example.org/prefs") == "/u/[email]/prefs"


def test_a_doubly_encoded_email_is_masked() -> None:
    assert scrub_page("/u/alice%2540example.test") == "/u/[email]"


def test_an_email_in_a_utm_value_is_masked() -> None:
    raw = "/?utm_content=alice%40example.test&utm_term=order%2012345678"
    assert page_utm(raw) == (("utm_content", "[email]"), ("utm_term", "order [num]"))
    assert page_utm("/?utm_source=alice%252540example.test") == (("utm_source", "[email]"),)


def test_a_run_of_six_or_more_digits_is_masked() -> None:
    assert scrub_page("/orders/12345678") == "/orders/[num]"
    assert scrub_page("/orders/123456/items/42") == "/orders/[num]/items/42"


def test_a_run_of_five_digits_is_kept() -> None:
    assert scrub_page("/zip/75001") == "/zip/75001"


def test_surrounding_whitespace_is_stripped() -> None:
    assert scrub_page("  /pricing \n") == "/pricing"


def test_control_characters_cannot_reach_storage_unencoded() -> None:
    assert scrub_page("/a%0d%0aSet-Cookie:x") == "/a%0D%0ASet-Cookie:x"


def test_a_long_page_is_truncated_to_max_length() -> None:
    assert scrub_page("/" + "a" * 1000) == "/" + "a" * 511
    assert scrub_page("/abcdef", max_length=4) == "/abc"


def test_truncation_does_not_leave_half_an_escape() -> None:
    assert scrub_page("/ab%C3%A9", max_length=5) == "/ab"


@pytest.mark.parametrize("raw", ["", "   ", "#top"])
def test_empty_input_gives_none(raw: str) -> None:
    assert scrub_page(raw) is None


def test_a_referrer_host_is_lowercased_without_port_userinfo_or_path() -> None:
    assert referrer_host("https://User:secret@WWW.Example.COM:8443/a/b?q=1#x") == "www.example.com"


def test_a_plain_http_referrer_gives_its_host() -> None:
    assert referrer_host("http://news.example/story") == "news.example"


def test_a_javascript_referrer_gives_none() -> None:
    assert referrer_host("javascript:alert(document.cookie)") is None


@pytest.mark.parametrize(
    "raw", ["ftp://files.example/x", "android-app://com.example.app/", "data:text/html,hi"]
)
def test_a_non_http_referrer_gives_none(raw: str) -> None:
    assert referrer_host(raw) is None


@pytest.mark.parametrize(
    "raw",
    ["", "   ", "not a url", "https://", "http://[::1/x", "http://host:port/", "//x.example/"],
)
def test_an_empty_or_unparseable_referrer_gives_none(raw: str) -> None:
    assert referrer_host(raw) is None
