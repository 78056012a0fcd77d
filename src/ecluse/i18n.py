"""French and English for Écluse's own pages and e-mails (issue 21 item 6).

Messages are written in English in the templates (``{{ _("...") }}``,
``{% trans %}``) and in Python (:func:`N_` marks a message translated later,
:func:`gettext` translates now); their translations live in gettext catalogues,
``ecluse/locale/<lang>/LC_MESSAGES/ecluse.po``, extracted and updated with Babel
(``babel.cfg``; docs/operations.md gives the commands). No compiled ``.mo`` is
committed: :func:`translations` compiles a catalogue in memory the first time a
language is used (fuzzy entries left out, as ``pybabel compile`` does), so an
installed package (wheel, image, editable checkout) needs only the ``.po``.

The language of a page: the ``ecluse_lang`` cookie the FR|EN switch sets
(``/hub/ecluse/language/<lang>``, ``/services/airlock/language/<lang>``: the same
cookie for the hub and the airlock, path ``/``), else the browser's
``Accept-Language``, else :data:`DEFAULT_LANGUAGE` (a client sending no
``Accept-Language`` at all, a script, gets English, the source language). The language of an e-mail:
the recipient's preference (the directory's ``preferredLanguage``), else
:data:`DEFAULT_LANGUAGE` — a mail has no browser.

Jinja: :class:`EcluseI18n` is Jinja2's ``jinja2.ext.i18n`` (newstyle gettext)
whose callables translate into the language of the page being rendered: the
``ecluse_lang`` variable of the render (the airlock passes it), else the request
of the JupyterHub handler rendering it. JupyterHub gives its templates no request
and passes only the user to ``template_vars`` callables; the one per-request
object of every hub render is ``static_url``, the handler's bound method, which
is how :func:`page_language` finds the handler (the hub's i18n tests render every
Écluse hub page through a real hub, so a JupyterHub that stops doing so fails them).
"""

from __future__ import annotations

import gettext as _gettext_module
import io
import re
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import quote

from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.support import Translations
from jinja2 import Environment, pass_context
from jinja2.ext import InternationalizationExtension
from jinja2.runtime import Context
from tornado import web

__all__ = [
    "COOKIE", "DEFAULT_LANGUAGE", "DOMAIN", "LANGUAGES", "LOCALE_DIR", "SOURCE_LANGUAGE",
    "EcluseI18n", "LanguageHandler", "N_", "compile_catalogue", "gettext", "install",
    "negotiate", "page_language", "parse_accept_language", "rendering", "request_language",
    "switch_links", "translations",
]

def N_(message: str) -> str:  # noqa: N802 - the gettext convention
    """Mark a message for extraction; it is translated where it is shown."""
    return message


#: the languages of Écluse's pages and mails; English is the source language
LANGUAGES: tuple[str, ...] = ("fr", "en")
#: a deployment's language where nothing says otherwise (French hospitals): a browser
#: asking only for languages Écluse does not speak, a mail to someone without a preference
DEFAULT_LANGUAGE = "fr"
#: the language the messages are written in
SOURCE_LANGUAGE = "en"
#: the cookie of the FR|EN switch (hub and airlock)
COOKIE = "ecluse_lang"
DOMAIN = "ecluse"
LOCALE_DIR = Path(__file__).parent / "locale"
#: how each language names itself in the switch
LABELS = {"fr": "FR", "en": "EN"}
NAMES = {"fr": "Français", "en": "English"}

#: the reasons of HTTP errors JupyterHub's error page shows (translated there)
HTTP_STATUS = (
    N_("Bad Request"), N_("Unauthorized"), N_("Forbidden"), N_("Not Found"),
    N_("Method Not Allowed"), N_("Conflict"), N_("Too Many Requests"),
    N_("Internal Server Error"), N_("Bad Gateway"), N_("Service Unavailable"),
    N_("Gateway Timeout"),
)

_TAG = re.compile(r"^[A-Za-z]{1,8}(?:-[A-Za-z0-9]{1,8})*$|^\*$")


def catalogue_path(language: str) -> Path:
    return LOCALE_DIR / language / "LC_MESSAGES" / f"{DOMAIN}.po"


@cache
def translations(language: str) -> _gettext_module.NullTranslations:
    """The translations of ``language``, compiled from its ``.po`` (in memory, once).

    English is the source language: its messages are their own translation. An
    unknown language or a missing catalogue raises (a broken install, never a page
    silently in the wrong language).
    """
    if language not in LANGUAGES:
        raise ValueError(f"no such language: {language!r} (Écluse speaks {', '.join(LANGUAGES)})")
    if language == SOURCE_LANGUAGE:
        return _gettext_module.NullTranslations()
    return compile_catalogue(catalogue_path(language), language)


def compile_catalogue(path: Path, language: str) -> Translations:
    """A ``.po`` file compiled in memory, as ``pybabel compile`` would (fuzzy entries,
    not yet reviewed, left out: their messages stay in English)."""
    with path.open("rb") as fh:
        catalog = read_po(fh, locale=language, domain=DOMAIN)
    buf = io.BytesIO()
    write_mo(buf, catalog, use_fuzzy=False)
    buf.seek(0)
    return Translations(buf, domain=DOMAIN)


def gettext(language: str, message: str, **variables: Any) -> str:
    """``message`` in ``language``, ``%(name)s`` placeholders filled from ``variables``."""
    text = translations(language).gettext(message)
    return text % variables if variables else text


def ngettext(language: str, singular: str, plural: str, n: int, **variables: Any) -> str:
    text = translations(language).ngettext(singular, plural, n)
    return text % {"num": n, **variables}


# ---------------------------------------------------------------- negotiation


def parse_accept_language(header: str | None) -> list[str]:
    """The primary language subtags of an ``Accept-Language`` header, preferred first
    (by ``q``, then by order; ``q=0`` and malformed entries left out)."""
    ranked: list[tuple[float, int, str]] = []
    for i, part in enumerate((header or "").split(",")):
        tag, _, params = part.strip().partition(";")
        tag = tag.strip()
        if not tag or not _TAG.match(tag):
            continue
        q = 1.0
        for param in params.split(";"):
            key, _, value = param.strip().partition("=")
            if key.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = -1.0
        if not 0 < q <= 1:
            continue
        ranked.append((-q, i, tag.split("-")[0].lower()))
    return [tag for _, _, tag in sorted(ranked)]


def negotiate(accept_language: str | None, cookie: str | None = None,
              default: str = DEFAULT_LANGUAGE) -> str:
    """The language of a page: the switch's cookie, else the first of the browser's
    languages Écluse speaks (``*``: the default), else ``default``. A client that sends
    no ``Accept-Language`` at all (a script, ``curl``; every browser sends one) gets the
    messages as written, in English, the source language."""
    if cookie in LANGUAGES:
        return str(cookie)
    if not (accept_language or "").strip():
        return SOURCE_LANGUAGE
    for tag in parse_accept_language(accept_language):
        if tag in LANGUAGES:
            return tag
        if tag == "*":
            return default
    return default


def request_language(handler: web.RequestHandler) -> str:
    """The language of a tornado request (cached on the handler)."""
    cached = getattr(handler, "_ecluse_language", None)
    if cached is None:
        cached = negotiate(handler.request.headers.get("Accept-Language"),
                           handler.get_cookie(COOKIE))
        handler._ecluse_language = cached  # type: ignore[attr-defined]
    return cached


def _handler(context: Context) -> web.RequestHandler | None:
    handler = context.get("ecluse_handler")
    if handler is None:
        # JupyterHub: static_url is the rendering handler's bound method (module doc)
        handler = getattr(context.get("static_url"), "__self__", None)
    return handler if isinstance(handler, web.RequestHandler) else None


#: the language of the page being rendered (:func:`rendering`): macros imported without
#: the page's context (``{% from "macros.html" import x %}``) translate into it too
_rendering: ContextVar[str | None] = ContextVar("ecluse_rendering_language", default=None)


@contextmanager
def rendering(language: str) -> Iterator[None]:
    """Render a page in ``language`` within this block (the airlock's ``render_template``)."""
    token = _rendering.set(language)
    try:
        yield
    finally:
        _rendering.reset(token)


def page_language(context: Context) -> str:
    """The language a template is being rendered in: the render's ``ecluse_lang``, else
    the request of the handler rendering it, else :func:`rendering`'s, else the default."""
    lang = context.get("ecluse_lang")
    if lang in LANGUAGES:
        return str(lang)
    handler = _handler(context)
    if handler is not None:
        return request_language(handler)
    return _rendering.get() or DEFAULT_LANGUAGE


def _safe_next(target: str) -> str:
    """A local path to go back to (never another site: ``//host``, ``/\\host``)."""
    if (not target.startswith("/") or target.startswith("//") or "\\" in target
            or any(ord(c) < 32 for c in target)):
        return "/"
    return target


def switch_links(context: Context) -> list[dict[str, Any]]:
    """The FR|EN switch of a page: each language's link back to this page."""
    handler = _handler(context)
    base = context.get("ecluse_lang_url") or "/hub/ecluse/language/"
    here = _safe_next(handler.request.uri or "/") if handler is not None else "/"
    current = page_language(context)
    return [
        {"lang": lang, "label": LABELS[lang], "name": NAMES[lang], "current": lang == current,
         "url": f"{base}{lang}?next={quote(here, safe='/')}"}
        for lang in LANGUAGES
    ]


# ---------------------------------------------------------------- Jinja


@pass_context
def _page_gettext(context: Context, message: str) -> str:
    return translations(page_language(context)).gettext(message)


@pass_context
def _page_ngettext(context: Context, singular: str, plural: str, n: int) -> str:
    return translations(page_language(context)).ngettext(singular, plural, n)


def install(env: Environment) -> None:
    """Per-page translations on ``env`` (which has the i18n extension)."""
    env.install_gettext_callables(_page_gettext, _page_ngettext, newstyle=True)  # type: ignore[attr-defined]
    env.globals["ecluse_language"] = pass_context(page_language)
    env.globals["ecluse_language_links"] = pass_context(switch_links)


class EcluseI18n(InternationalizationExtension):
    """``jinja2.ext.i18n`` (newstyle) translating into each page's language: give it
    to an environment's ``extensions`` (the hub: ``jinja_environment_options``)."""

    def __init__(self, environment: Environment) -> None:
        super().__init__(environment)
        install(environment)


# it *is* the environment's i18n extension: code that looks for jinja2's own under its
# name (``"jinja2.ext.InternationalizationExtension" in env.extensions``) finds this one
# rather than adding a second, untranslated one over it
EcluseI18n.identifier = InternationalizationExtension.identifier


# ---------------------------------------------------------------- the switch


class LanguageHandler(web.RequestHandler):
    """``GET .../language/<lang>?next=<path>``: remember the language (cookie
    ``ecluse_lang``, a year, path ``/``: hub and airlock) and go back to the page."""

    def get(self, language: str) -> None:
        if language not in LANGUAGES:
            raise web.HTTPError(404)
        self.set_cookie(COOKIE, language, path="/", expires_days=365, samesite="Lax",
                        secure=self.request.protocol == "https")
        self.redirect(_safe_next(self.get_argument("next", "/")))
