"""French and English (``ecluse.i18n``): the catalogue holds every message, translated;
the language of a page is the switch's cookie, else the browser's, else French.

The pages themselves, in both languages through a real hub, are in
``tests/airlock/test_web_i18n.py``; the mails in ``tests/airlock/test_notify.py``.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from babel.messages.extract import DEFAULT_KEYWORDS, extract_from_dir
from babel.messages.frontend import parse_mapping_cfg
from babel.messages.pofile import read_po
from jinja2 import Environment, FileSystemLoader

import ecluse
from ecluse import i18n

SRC = Path(ecluse.__file__).parent
ROOT = SRC.parents[1]
PLACEHOLDER = re.compile(r"%\((\w+)\)[sd]|\{(\w+)\}")


def extracted(directory: Path) -> dict[str, list[str]]:
    """The messages Babel extracts from ``directory`` with the project's mapping
    (``babel.cfg``, ``-k N_``: the commands of docs/operations.md), with where."""
    with (ROOT / "babel.cfg").open() as fh:
        method_map, options_map = parse_mapping_cfg(fh, "babel.cfg")
    keywords = {**DEFAULT_KEYWORDS, "N_": None}
    found: dict[str, list[str]] = {}
    for filename, lineno, message, _comments, _context in extract_from_dir(
            str(directory), method_map, options_map, keywords=keywords):
        for msgid in message if isinstance(message, tuple) else (message,):
            if msgid:
                found.setdefault(msgid, []).append(f"{filename}:{lineno}")
    return found


def catalogue_problems(messages: dict[str, list[str]], po: Path) -> list[str]:
    """What is wrong with ``po`` for these messages: missing, untranslated, fuzzy, or
    placeholders changed. (An entry no source uses is harmless: ``pybabel update
    --ignore-obsolete`` drops it; the catalogue may hold a branch's messages before its
    merge.)"""
    with po.open("rb") as fh:
        catalog = read_po(fh)
    # a plural entry answers for its singular and its plural English alike
    entries = {}
    for entry in catalog:
        for msgid in entry.id if isinstance(entry.id, tuple) else (entry.id,):
            entries[msgid] = entry
    problems = []
    for msgid, where in sorted(messages.items()):
        entry = entries.get(msgid)
        strings = () if entry is None else (
            entry.string if isinstance(entry.string, tuple) else (entry.string,))
        if entry is None:
            problems.append(f"missing from {po.name}: {msgid!r} ({where[0]})")
        elif not all(strings):
            problems.append(f"not translated: {msgid!r} ({where[0]})")
        elif entry.fuzzy:
            problems.append(f"fuzzy (to review): {msgid!r}")
        elif any(sorted(PLACEHOLDER.findall(msgid)) != sorted(PLACEHOLDER.findall(s))
                 for s in strings):
            problems.append(f"placeholders differ: {msgid!r} -> {entry.string!r}")
    return problems


def test_every_message_is_in_the_french_catalogue_translated():
    """Extract from the templates and the Python source as the docs say, compare with the
    committed ``.po``: a message added without its French fails here, with the
    commands to run in docs/operations.md."""
    messages = extracted(SRC)
    assert len(messages) > 200  # the pages, the mails, the errors
    problems = catalogue_problems(messages, i18n.catalogue_path("fr"))
    assert not problems, "\n".join(["the French catalogue (docs/operations.md, Languages):",
                                    *problems])


def test_the_catalogue_check_finds_a_new_message(tmp_path):
    """The check above can fail: a template with a message the catalogue lacks, a
    Python message marked N_, a fuzzy and a broken translation are each reported."""
    (tmp_path / "templates").mkdir()
    (tmp_path / "templates" / "new.html").write_text(
        '{{ _("Sign in") }} {{ _("A brand new sentence") }} {{ _("Version %(version)s", '
        'version=1) }} {{ _("Hub") }}')
    (tmp_path / "mod.py").write_text('from ecluse.i18n import N_\nX = N_("Marked in Python")\n')
    po = tmp_path / "fr.po"
    po.write_text('msgid ""\nmsgstr ""\n"Content-Type: text/plain; charset=utf-8\\n"\n\n'
                  'msgid "Sign in"\nmsgstr "Se connecter"\n\n'
                  '#, fuzzy\nmsgid "Hub"\nmsgstr "Hub"\n\n'
                  'msgid "Version %(version)s"\nmsgstr "Version"\n\n'
                  'msgid "Gone"\nmsgstr "Parti"\n')
    messages = extracted(tmp_path)
    assert set(messages) == {"Sign in", "A brand new sentence", "Version %(version)s", "Hub",
                             "Marked in Python"}
    problems = catalogue_problems(messages, po)
    assert [p.split(":")[0] for p in problems] == [
        "missing from fr.po", "fuzzy (to review)", "missing from fr.po",
        "placeholders differ"]
    assert "A brand new sentence" in problems[0] and "Marked in Python" in problems[2]


def test_fuzzy_entries_are_left_out_as_pybabel_compile_does(tmp_path):
    po = tmp_path / "ecluse.po"
    po.write_text('msgid ""\nmsgstr ""\n"Content-Type: text/plain; charset=utf-8\\n"\n\n'
                  'msgid "Sign in"\nmsgstr "Se connecter"\n\n'
                  '#, fuzzy\nmsgid "Sign out"\nmsgstr "Se connecter"\n')
    t = i18n.compile_catalogue(po, "fr")
    assert t.gettext("Sign in") == "Se connecter"
    assert t.gettext("Sign out") == "Sign out"


def test_translations_and_unknown_languages():
    assert i18n.gettext("fr", "Sign in") == "Se connecter"
    assert i18n.gettext("en", "Sign in") == "Sign in"
    assert i18n.gettext("fr", "Version %(version)s", version=3) == "Version 3"
    assert i18n.gettext("fr", "not a message of Écluse") == "not a message of Écluse"
    with pytest.raises(ValueError, match="no such language: 'de'"):
        i18n.translations("de")


@pytest.mark.parametrize(("header", "cookie", "expected"), [
    ("fr-FR,fr;q=0.9,en-US;q=0.8,en;q=0.7", None, "fr"),
    ("en-GB,en;q=0.9,fr;q=0.8", None, "en"),
    ("de-DE, en;q=0.5, fr;q=0.7", None, "fr"),  # by q, not by order
    ("fr;q=0, en", None, "en"),  # q=0: not acceptable
    ("de, es", None, "fr"),  # nothing Écluse speaks: the deployment's default
    ("de, *;q=0.1", None, "fr"),
    ("nonsense;;; ,, fr", None, "fr"),
    ("", None, "en"),  # no header (a script): the messages as written
    (None, None, "en"),
    ("fr", "en", "en"),  # the switch wins
    ("en", "fr", "fr"),
    ("en", "de", "en"),  # a cookie naming no language of Écluse is ignored
    ("fr", "<script>", "fr"),
])
def test_negotiation(header, cookie, expected):
    assert i18n.negotiate(header, cookie) == expected


def test_accept_language_order():
    assert i18n.parse_accept_language("fr-CH, fr;q=0.9, en;q=0.8, de;q=0.7, *;q=0.5") == [
        "fr", "fr", "en", "de", "*"]
    assert i18n.parse_accept_language("en;q=abc, fr") == ["fr"]


@pytest.mark.parametrize(("target", "expected"), [
    ("/hub/home", "/hub/home"),
    ("/services/airlock/requests/abc?x=1", "/services/airlock/requests/abc?x=1"),
    ("//evil.example/", "/"),
    ("/\\evil.example", "/"),
    ("https://evil.example/", "/"),
    ("javascript:alert(1)", "/"),
    ("/hub/\r\nSet-Cookie: x=1", "/"),
])
def test_the_switch_goes_back_only_to_a_page_of_this_site(target, expected):
    assert i18n._safe_next(target) == expected


def test_templates_render_in_the_language_of_the_render():
    """jinja2.ext.i18n newstyle: placeholders filled after translation, values escaped,
    the translation's own markup kept; {% trans %} blocks too."""
    env = Environment(loader=FileSystemLoader(str(SRC / "airlock" / "templates")),
                      extensions=[i18n.EcluseI18n], autoescape=True)
    t = env.from_string('{{ _("<strong>%(name)s</strong> is blocked: this request cannot be '
                        'approved while it holds this file.", name=n) }}|'
                        '{% trans %}Sign in{% endtrans %}|{{ ecluse_language() }}')
    fr = t.render(n="<b>x</b>", ecluse_lang="fr")
    assert fr == ("<strong>&lt;b&gt;x&lt;/b&gt;</strong> est bloqué : cette demande ne peut "
                  "pas être approuvée tant qu’elle contient ce fichier.|Se connecter|fr")
    assert t.render(n="y", ecluse_lang="en").endswith("|Sign in|en")
    # without a language nor a request: the deployment's default
    assert t.render(n="y").endswith("|Se connecter|fr")


def test_the_extension_answers_to_jinja2s_i18n_name():
    """Code that adds ``jinja2.ext.i18n`` with null translations when an environment lacks
    it finds Écluse's (the translations stay)."""
    env = Environment(extensions=[i18n.EcluseI18n], autoescape=True)
    assert isinstance(env.extensions["jinja2.ext.InternationalizationExtension"],
                      i18n.EcluseI18n)
    assert env.from_string('{{ _("Sign in") }}').render(ecluse_lang="fr") == "Se connecter"


def test_macros_imported_without_the_page_context_translate_into_the_page_language():
    from jinja2 import DictLoader

    env = Environment(loader=DictLoader({
        "macros.html": '{% macro m() %}{{ _("Sign in") }}{% endmacro %}',
        "page.html": '{% from "macros.html" import m %}{{ m() }}|{{ _("Sign in") }}',
    }), extensions=[i18n.EcluseI18n], autoescape=True)
    for lang, expected in (("en", "Sign in|Sign in"), ("fr", "Se connecter|Se connecter")):
        with i18n.rendering(lang):
            assert env.get_template("page.html").render(ecluse_lang=lang) == expected
    # outside a rendering block the imported macro knows no page: the default
    assert env.get_template("page.html").render(ecluse_lang="en") == "Se connecter|Sign in"
