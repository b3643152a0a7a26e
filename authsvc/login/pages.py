"""Server-rendered pages (login, errors, logout): Jinja2 templates, Chinese and English, strict CSP.

Nothing on these pages comes from another site: styles and the one script are served from `authsvc/static/`, and
the only other place the page may talk to is `sscard helper` on the citizen's own computer.
"""

from __future__ import annotations

import io
import re
from pathlib import Path
from typing import Any

import segno
from fastapi import APIRouter
from fastapi.responses import FileResponse, HTMLResponse
from jinja2 import Environment, FileSystemLoader, select_autoescape

from authsvc.config import Settings
from authsvc.problems import Problem
from authsvc.tokens.assurance import HIGH, LOW, SUBSTANTIAL

HERE = Path(__file__).resolve().parents[1]
STATIC = HERE / "static"
LOCALES = ("zh-CN", "en")
DEFAULT_LOCALE = "zh-CN"

_env = Environment(
    loader=FileSystemLoader(HERE / "templates"), autoescape=select_autoescape(["html"]), trim_blocks=True
)

TEXT: dict[str, dict[str, str]] = {
    "zh-CN": {
        "service": "社会保障卡统一身份认证",
        "skip": "跳到主要内容",
        "switch": "English",
        "sign_in_to": "登录 {portal}",
        "asks_for": "{portal} 要求的认证级别：",
        "step_up": "您已登录，但 {portal} 要求更高的认证级别。只需补充缺少的认证方式。",
        "card_method": "使用社会保障卡",
        "card_help": "请将社会保障卡插入读卡器，确认本机已运行 sscard helper，"
        "然后点击下面的按钮，在 helper 窗口中输入密码。",
        "card_button": "使用社会保障卡登录",
        "ecard_method": "使用电子社保卡",
        "ecard_help": "打开手机上的电子社保卡，扫描下面的二维码，核对要登录的网站名称后确认。",
        "ecard_link": "无法扫码？在手机上打开此链接",
        "face_method": "人脸识别",
        "face_help": "点击按钮后，用手机扫描二维码（或在本机打开链接），按提示完成活体检测。",
        "face_button": "开始人脸识别",
        "face_link": "在本机进行人脸识别",
        "progress": "已完成的认证：",
        "unavailable": "此认证级别所需的认证方式暂未开放。",
        "cancel": "取消并返回",
        "noscript": "此页面需要启用 JavaScript 才能与读卡助手通信。",
        "error_title": "无法继续",
        "error_code": "错误代码",
        "back": "请返回原网站重新开始。",
        "logout_title": "退出登录",
        "logout_question": "是否退出统一身份认证？您在所有门户网站的登录都将结束。",
        "logout_yes": "退出",
        "logout_no": "保持登录",
        "logged_out": "您已退出登录。",
        "kept": "您仍保持登录。",
        LOW: "实名认证（社会保障卡或电子社保卡）",
        SUBSTANTIAL: "两项认证（社会保障卡 + 密码，或卡/电子社保卡 + 人脸识别）",
        HIGH: "最高级别（社会保障卡 + 密码 + 人脸识别）",
        "msg_contacting": "正在联系读卡助手……请在助手窗口中输入密码。",
        "msg_waiting": "等待认证完成……",
        "msg_done": "认证成功，正在返回门户网站……",
        "msg_no_helper": "无法连接读卡助手。请确认已运行 sscard helper。",
        "msg_failed": "认证失败：",
        "msg_expired": "登录已过期，请返回原网站重新开始。",
        "msg_more": "已完成一项认证，请继续完成下面的认证方式。",
        "msg_face_waiting": "等待人脸识别结果……",
        "msg_face_failed": "人脸识别未通过，可以重试。",
        "msg_face_timed_out": "人脸识别超时未收到结果，请重试。",
        "msg_face_error": "暂时无法开始人脸识别，请稍后重试。",
    },
    "en": {
        "service": "Social security card sign-on",
        "skip": "Skip to the main content",
        "switch": "中文",
        "sign_in_to": "Sign in to {portal}",
        "asks_for": "{portal} asks for:",
        "step_up": "You are signed in, but {portal} asks for a higher level. Only the missing factors are needed.",
        "card_method": "With your social security card",
        "card_help": "Insert your card in the reader, make sure sscard helper runs on this computer, press the button "
        "below and enter your PIN in the helper's window.",
        "card_button": "Sign in with the card",
        "ecard_method": "With your electronic social security card",
        "ecard_help": "Open the e-card app on your phone, scan this code, check the name of the site you sign in "
        "to and approve.",
        "ecard_link": "Cannot scan? Open this link on the phone",
        "face_method": "Face check",
        "face_help": "Press the button, then scan the code with your phone (or open the link here) and follow the "
        "liveness check.",
        "face_button": "Start the face check",
        "face_link": "Do the face check on this device",
        "progress": "Checks done so far: ",
        "unavailable": "The method this level needs is not available.",
        "cancel": "Cancel and go back",
        "noscript": "This page needs JavaScript to talk to the card helper.",
        "error_title": "Cannot continue",
        "error_code": "Error code",
        "back": "Please go back to the site you came from and start again.",
        "logout_title": "Sign out",
        "logout_question": "Sign out of the social security card sign-on? You will be signed out of every portal.",
        "logout_yes": "Sign out",
        "logout_no": "Stay signed in",
        "logged_out": "You are signed out.",
        "kept": "You are still signed in.",
        LOW: "real name (your card or e-card)",
        SUBSTANTIAL: "two checks (card and PIN, or card or e-card and a face check)",
        HIGH: "highest (card with PIN and a face check)",
        "msg_contacting": "Contacting the card helper… enter your PIN in its window.",
        "msg_waiting": "Waiting for the sign-in to complete…",
        "msg_done": "Signed in, returning to the portal…",
        "msg_no_helper": "The card helper does not answer. Make sure sscard helper is running.",
        "msg_failed": "Sign-in failed: ",
        "msg_expired": "This sign-in has expired; go back to the site and start again.",
        "msg_more": "One check done; please complete the method below.",
        "msg_face_waiting": "Waiting for the face check's result…",
        "msg_face_failed": "The face check did not pass; you may try again.",
        "msg_face_timed_out": "The face check's result did not arrive in time; please try again.",
        "msg_face_error": "The face check cannot start right now; please try again later.",
    },
}

_TAG = re.compile(r"[A-Za-z]{1,8}(-[A-Za-z0-9]{1,8})*")


def _match(tag: str) -> str | None:
    tag = tag.strip().lower()
    if tag.startswith("zh"):
        return "zh-CN"
    if tag.startswith("en"):
        return "en"
    return None


def choose_locale(*, override: str | None = None, ui_locales: str | None = None, accept: str | None = None) -> str:
    """`override` (the page's language switch), then `ui_locales` (OpenID Connect, in order of preference), then the
    browser's Accept-Language (by q-value), else Chinese."""
    if override in LOCALES:
        return override
    for tag in (ui_locales or "").split():
        found = _match(tag) if _TAG.fullmatch(tag) else None
        if found:
            return found
    ranked: list[tuple[float, int, str]] = []
    for i, part in enumerate((accept or "")[:512].split(",")):
        tag, _, params = part.partition(";")
        q = 1.0
        if params.strip().startswith("q="):
            try:
                q = float(params.strip()[2:])
            except ValueError:
                q = 0.0
        found = _match(tag)
        if found and q > 0:
            ranked.append((-q, i, found))
    return sorted(ranked)[0][2] if ranked else DEFAULT_LOCALE


def security_headers(settings: Settings) -> dict[str, str]:
    csp = (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; "
        f"connect-src 'self' {settings.helper_url}; frame-ancestors 'none'; base-uri 'none'; object-src 'none'"
    )
    return {
        "Content-Security-Policy": csp,
        "X-Content-Type-Options": "nosniff",
        "X-Frame-Options": "DENY",
        "Referrer-Policy": "no-referrer",
        "Cache-Control": "no-store",
    }


def render(settings: Settings, template: str, locale: str, *, status: int = 200, **context: Any) -> HTMLResponse:
    text = TEXT[locale]
    other = LOCALES[1 - LOCALES.index(locale)]
    html = _env.get_template(template).render(t=text, locale=locale, other=other, **context)
    return HTMLResponse(html, status_code=status, headers=security_headers(settings))


def error_page(settings: Settings, locale: str, error: str, description: str, *, status: int = 400) -> HTMLResponse:
    """Shown instead of a redirect when the redirect URI cannot be trusted, and for browser-facing refusals."""
    return render(settings, "error.html", locale, status=status, error=error, description=description)


def qr_svg(url: str) -> str:
    """A QR code as SVG markup for the login page to insert (its CSP allows no data: images). The SVG namespace is
    declared (segno's svg_inline leaves it out): the page parses the markup as image/svg+xml, and an element without
    it is not drawn. On a white ground with its quiet zone, so that a camera reads it on any page background."""
    out = io.BytesIO()
    segno.make(url, error="m").save(out, kind="svg", xmldecl=False, nl=False, scale=4, light="#fff")
    return out.getvalue().decode()


static_router = APIRouter(include_in_schema=False)
_STATIC_TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8"}


@static_router.get("/static/{name}")
def static(name: str) -> FileResponse:
    path = STATIC / name
    if not re.fullmatch(r"[a-z0-9_-]+\.(js|css)", name) or not path.is_file():
        raise Problem(404, "not_found", "no such file")
    headers = {"Cache-Control": "public, max-age=300", "X-Content-Type-Options": "nosniff"}
    return FileResponse(path, media_type=_STATIC_TYPES[path.suffix], headers=headers)
