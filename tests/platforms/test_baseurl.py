"""Base URLs: normalisation and the allowlist that keeps keys on Opsgenie's hosts."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from worker.platforms.baseurl import BaseUrlError, check_allowed, normalise_base_url
from worker.settings import OFFICIAL_BASE_URLS

US, EU, JSM = OFFICIAL_BASE_URLS


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://api.opsgenie.com/", US),
        ("https://api.opsgenie.com", US),
        ("https://API.OpsGenie.COM/", US),
        ("HTTPS://api.opsgenie.com/", US),
        ("https://api.opsgenie.com:443/", US),
        ("  https://api.eu.opsgenie.com  ", EU),
        ("https://api.eu.opsgenie.com:443", EU),
    ],
)
def test_official_hosts_are_allowed_in_any_spelling(url: str, expected: str) -> None:
    assert normalise_base_url(url) == expected
    assert check_allowed(url, OFFICIAL_BASE_URLS) == expected


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("http://127.0.0.1:8080", "http://127.0.0.1:8080/"),
        ("http://LOCALHOST:80/", "http://localhost/"),
        ("https://api.opsgenie.com:8443", "https://api.opsgenie.com:8443/"),
        ("http://api.opsgenie.com:443/", "http://api.opsgenie.com:443/"),
        ("https://[::1]:9000/x", "https://[::1]:9000/x/"),
        ("https://api.atlassian.com/jsm/ops/", "https://api.atlassian.com/jsm/ops/"),
    ],
)
def test_normalise_keeps_scheme_port_and_path(url: str, expected: str) -> None:
    assert normalise_base_url(url) == expected


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("https://user:pw@api.opsgenie.com/", "credentials"),
        ("https://user@api.opsgenie.com/", "credentials"),
        ("https://:pw@api.opsgenie.com/", "credentials"),
        ("https://api.opsgenie.com/?x=1", "query or fragment"),
        ("https://api.opsgenie.com/#top", "query or fragment"),
        ("https://evil.test/?https://api.opsgenie.com/", "query or fragment"),
        ("ftp://api.opsgenie.com/", "http(s) URL"),
        ("file:///etc/passwd", "http(s) URL"),
        ("javascript:alert(1)", "http(s) URL"),
        ("api.opsgenie.com", "http(s) URL"),
        ("//api.opsgenie.com/", "http(s) URL"),
        ("https://", "http(s) URL"),
        ("", "http(s) URL"),
        ("   ", "http(s) URL"),
        ("not a url at all", "http(s) URL"),
        ("https://api.opsgenie.com:99999/", "not a valid URL"),
        ("https://api.opsgenie.com:abc/", "not a valid URL"),
        ("https://[::1/", "not a valid URL"),
    ],
)
def test_malformed_urls_are_refused(url: str, reason: str) -> None:
    with pytest.raises(BaseUrlError, match=reason.replace("(", r"\(").replace(")", r"\)")):
        normalise_base_url(url)
    with pytest.raises(BaseUrlError):
        check_allowed(url, OFFICIAL_BASE_URLS)


@pytest.mark.parametrize(
    "url",
    [
        "http://api.opsgenie.com/",
        "https://api.opsgenie.com:8443/",
        "https://api.opsgenie.com:80/",
        "https://api.opsgenie.com.evil.test/",
        "https://evil.test/api.opsgenie.com",
        "https://api-opsgenie.com/",
        "https://opsgenie.com/",
        "https://app.opsgenie.com/",
        "https://api.opsgenie.com./",
        "https://api.opsgenie.com/v2/",
        "https://api.opsgenie.com/../",
        "https://34.120.0.1/",
        "https://[2001:db8::1]/",
        "http://127.0.0.1/",
    ],
)
def test_lookalikes_and_other_hosts_are_not_on_the_allowlist(url: str) -> None:
    with pytest.raises(BaseUrlError, match="not one of the allowed API hosts"):
        check_allowed(url, OFFICIAL_BASE_URLS)


def test_the_scheme_must_match_the_allowlist_entry() -> None:
    local = ["http://127.0.0.1:8080/"]

    assert check_allowed("http://127.0.0.1:8080", local) == "http://127.0.0.1:8080/"
    with pytest.raises(BaseUrlError):
        check_allowed("https://127.0.0.1:8080/", local)
    with pytest.raises(BaseUrlError):
        check_allowed("http://127.0.0.1:8081/", local)


def test_an_ip_literal_is_allowed_only_when_listed() -> None:
    assert check_allowed("https://[::1]:9000", ["https://[::1]:9000/"]) == "https://[::1]:9000/"
    with pytest.raises(BaseUrlError):
        check_allowed("https://[::1]:9000/", OFFICIAL_BASE_URLS)


def test_an_empty_allowlist_allows_nothing() -> None:
    with pytest.raises(BaseUrlError):
        check_allowed(US, [])


def test_normalisation_is_idempotent_for_allowed_urls() -> None:
    for url in OFFICIAL_BASE_URLS:
        assert normalise_base_url(normalise_base_url(url)) == url


# Text near the interesting cases, as well as arbitrary text.
_url_like = st.builds(
    "{}://{}{}{}{}{}".format,
    st.sampled_from(["https", "http", "HTTPS", "ftp", "file", "javascript", ""]),
    st.sampled_from(["", "user@", "user:pw@", ":@"]),
    st.sampled_from(
        ["api.opsgenie.com", "API.eu.opsgenie.com", "api.opsgenie.com.evil.test", "[::1]", ""]
    ),
    st.sampled_from(["", ":443", ":80", ":0", ":65536", ":x"]),
    st.text(max_size=12),
    st.sampled_from(["", "?", "?q=1", "#", "#f"]),
)


@given(st.one_of(st.text(), _url_like))
def test_check_allowed_returns_an_allowed_url_or_raises_base_url_error(text: str) -> None:
    try:
        result = check_allowed(text, OFFICIAL_BASE_URLS)
    except BaseUrlError:
        return
    assert result in OFFICIAL_BASE_URLS
