"""Session rules without I/O: the cookie's attributes, and locale choice for the pages."""

from __future__ import annotations

from authsvc.config import Settings
from authsvc.login.pages import choose_locale, security_headers
from authsvc.sessions import service
from card.cryptogram import web_context, web_origin


def test_the_cookie_is_http_only_lax_and_secure_on_https() -> None:
    spec = service.cookie_spec(Settings(issuer="https://id.example.gov.cn"))
    assert (spec.httponly, spec.samesite, spec.secure, spec.max_age) == (True, "lax", True, 8 * 3600)
    assert not service.cookie_spec(Settings(issuer="http://127.0.0.1:8000")).secure


def test_malformed_cookies_are_no_session() -> None:
    for cookie in (None, "", "no-dot", ".secret", "sid.", "x" * 200):
        assert service._parse(cookie) is None
    assert service._parse("sid.secret") == ("sid", "secret")


def test_locale_from_override_ui_locales_then_accept_language() -> None:
    assert choose_locale() == "zh-CN"
    assert choose_locale(ui_locales="fr en-US") == "en"
    assert choose_locale(accept="fr;q=1, en;q=0.8, zh-CN;q=0.9") == "zh-CN"
    assert choose_locale(override="en", ui_locales="zh") == "en"


def test_the_page_may_talk_to_itself_and_the_helper_only() -> None:
    csp = security_headers(Settings(helper_url="http://127.0.0.1:5000"))["Content-Security-Policy"]
    assert "default-src 'self'" in csp and "connect-src 'self' http://127.0.0.1:5000;" in csp
    assert "frame-ancestors 'none'" in csp


def test_the_web_context_is_bound_to_the_serialised_origin() -> None:
    assert web_origin("HTTPS://ID.Example.gov.cn:443/sso/") == "https://id.example.gov.cn"
    assert web_origin("http://127.0.0.1:8000/x") == "http://127.0.0.1:8000"
    assert web_context("https://id.example.gov.cn") != web_context("https://id.example.gov.cn.evil.example")


def test_on_https_the_cookies_are_host_only_so_a_sibling_subdomain_cannot_plant_them() -> None:
    from authsvc.login import pending

    https = Settings(issuer="https://id.example.gov.cn")
    spec = service.cookie_spec(https)
    assert spec.name == "__Host-sscard_session" and spec.secure and spec.path == "/"
    assert pending.browser_cookie(True) == "__Host-sscard_login"
    assert service.cookie_spec(Settings(issuer="http://127.0.0.1:8000")).name == "sscard_session"


def test_session_cookies_are_base64url_parts_only() -> None:
    for cookie in ("\x00aaaaaaaaaaaaaaaaaaaa.secret", "sid.sec ret", "s%id.secret"):
        assert service._parse(cookie) is None


def test_an_internationalised_origin_is_serialised_as_a_browser_does() -> None:
    assert web_origin("https://社保.政务:443/") == "https://xn--ruqr22h.xn--zfr164b"
    assert web_origin("https://ID.例子.中国") == "https://id.xn--fsqu00a.xn--fiqs8s"
