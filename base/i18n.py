"""Languages: gettext catalogs (managed with Babel), the language choice, money and dates.

Every string a person reads is wrapped in ``_()`` where it is written; ``pybabel extract``
collects them into ``base/locale/meterctl.pot`` and the Chinese catalog
``base/locale/zh_CN/LC_MESSAGES/meterctl.po`` holds their translations (``make i18n``).
The ``.mo`` file is compiled by ``make venv``; when it is missing or older than its ``.po``
(a fresh clone run without make, an edited catalog) the ``.po`` is compiled in memory with
Babel at first use, so a translation is never silently lost.

The language: ``--lang``, else the locale variables (``LC_ALL``, ``LC_MESSAGES``, ``LANG``:
``zh_CN.UTF-8`` means Chinese), else ``[site] language``, else English. JSON keys, enum values,
exit codes and audit records are never translated.
"""

from __future__ import annotations

import gettext
import io
import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime, tzinfo
from decimal import Decimal
from pathlib import Path

DOMAIN = "meterctl"
LOCALE_DIR = Path(__file__).parent / "locale"
LANGUAGES = ("en", "zh-CN")
DEFAULT = "en"
# A language name as people and locales write it -> ours.
_ALIASES = {"en": "en", "zh": "zh-CN", "zh-cn": "zh-CN", "zh_cn": "zh-CN", "zh-hans": "zh-CN"}
_CATALOG_LOCALE = {"zh-CN": "zh_CN"}

_current = DEFAULT
_translations: dict[str, gettext.NullTranslations] = {}


def normalise(name: str) -> str | None:
    """``zh_CN.UTF-8`` / ``zh-CN`` / ``zh`` -> ``zh-CN``; ``en_US`` -> ``en``; else None."""
    text = name.strip().split(".")[0].split("@")[0].lower()
    if not text or text in ("c", "posix"):
        return None
    if text in _ALIASES:
        return _ALIASES[text]
    head = text.replace("-", "_").split("_")[0]
    if head == "zh":
        return "zh-CN"
    if head == "en":
        return "en"
    return None


def choose(cli: str | None, environ: Mapping[str, str], site: str | None = None) -> str:
    """The language by precedence: ``--lang``, locale variables, ``[site] language``, English."""
    if cli:
        chosen = normalise(cli)
        if chosen is None:
            raise ValueError(
                Msg(
                    N_("--lang: {value} is not one of {choices}"),
                    value=repr(cli),
                    choices=", ".join(LANGUAGES),
                )
            )
        return chosen
    for variable in ("LC_ALL", "LC_MESSAGES", "LANG"):
        value = environ.get(variable, "")
        if value:
            chosen = normalise(value)
            if chosen is not None:
                return chosen
            break  # a set but neutral locale (C, POSIX) ends the search like gettext does
    if site:
        chosen = normalise(site)
        if chosen is not None:
            return chosen
    return DEFAULT


def _compile_po(po_path: Path) -> gettext.GNUTranslations:
    from babel.messages.mofile import write_mo
    from babel.messages.pofile import read_po

    with po_path.open("rb") as handle:
        catalog = read_po(handle)
    buffer = io.BytesIO()
    write_mo(buffer, catalog)
    buffer.seek(0)
    return gettext.GNUTranslations(buffer)


def translations(language: str) -> gettext.NullTranslations:
    """The catalog for ``language`` (English: the source strings themselves)."""
    found = _translations.get(language)
    if found is not None:
        return found
    folder = _CATALOG_LOCALE.get(language)
    result: gettext.NullTranslations = gettext.NullTranslations()
    if folder is not None:
        base = LOCALE_DIR / folder / "LC_MESSAGES"
        po, mo = base / f"{DOMAIN}.po", base / f"{DOMAIN}.mo"
        if mo.exists() and (not po.exists() or mo.stat().st_mtime >= po.stat().st_mtime):
            with mo.open("rb") as handle:
                result = gettext.GNUTranslations(handle)
        elif po.exists():
            result = _compile_po(po)
    _translations[language] = result
    return result


def set_language(language: str) -> None:
    global _current
    _current = language if language in LANGUAGES else DEFAULT


def current() -> str:
    return _current


@contextmanager
def using(language: str) -> Iterator[None]:
    """Speak ``language`` inside the block (e.g. a chart drawn in English), then go back."""
    before = _current
    set_language(language)
    try:
        yield
    finally:
        set_language(before)


def _(message: str) -> str:
    """``message`` in the current language (the English source when it has no translation)."""
    if _current == DEFAULT:
        return message
    return translations(_current).gettext(message)


def N_(message: str) -> str:
    """Mark ``message`` for the catalog without translating it yet (translated when shown)."""
    return message


class Msg(str):
    """An English sentence made from a catalog template, that can be shown translated later.

    It *is* the English text (a ``str``): stored, logged, audited and put in JSON as such, so
    records stay language-neutral. :func:`shown` gives it in the reader's language, from
    ``template`` (marked for the catalog with ``N_``) and ``params`` (a ``Msg`` among them is
    translated too). Code that cannot know its reader's language (the rules, the store's
    refusals) builds these; the user interfaces show them.
    """

    # One attribute, (template, params): a Msg is made per account in a 300k-account plan.
    parts: tuple[str, dict[str, object]]

    def __new__(cls, template: str, /, **params: object) -> Msg:
        self = str.__new__(cls, template.format_map(params))
        self.parts = (template, params)
        return self

    @property
    def template(self) -> str:
        return self.parts[0]

    @property
    def params(self) -> dict[str, object]:
        return self.parts[1]

    def __str__(self) -> str:
        return self  # str(exc) and f"{msg}" keep the template for shown()

    def __reduce__(self) -> tuple[object, ...]:
        return (str, (str.__str__(self),))  # a copy or pickle is the plain English text


def joined(parts: Sequence[object], separator: str = "") -> Msg:
    """``parts`` one after the other (each shown in the reader's language in turn)."""
    escaped = separator.replace("{", "{{").replace("}", "}}")
    template = escaped.join(f"{{p{i}}}" for i in range(len(parts)))
    return Msg(template, **{f"p{i}": part for i, part in enumerate(parts)})


def shown(text: object) -> str:
    """``text`` for a person: a :class:`Msg` (or an exception made from one) in the current
    language, anything else as is."""
    if isinstance(text, BaseException):
        text = str(text)  # the Msg it was raised with, when it was
    template: str
    values: Mapping[str, object]
    if isinstance(text, tuple):  # (template, values): a rule's sentence (Reason.text)
        template, values = text
        if _current == DEFAULT:
            return template.format_map(values)
    elif not isinstance(text, Msg) or _current == DEFAULT:
        return str(text)
    else:
        template, values = text.parts
    params = {k: shown(v) if isinstance(v, Msg | BaseException) else v for k, v in values.items()}
    try:  # gettext("") is the catalog's header: an empty template stays empty
        return (_(template) if template else template).format(**params)
    except (KeyError, IndexError, ValueError):  # a broken translation: English, never a crash
        return template.format_map(values)


def ngettext(singular: str, plural: str, n: int) -> str:
    if _current == DEFAULT:
        return singular if n == 1 else plural
    return translations(_current).ngettext(singular, plural, n)


def money(amount: Decimal | float | int | str | None) -> str:
    """Yuan with two decimals: ``-120.50 元`` (English: ``-120.50 yuan``); None or text that is
    not a number (a missing balance) as ``-`` or as it is."""
    if amount is None or amount == "":
        return "-"
    try:
        value = Decimal(str(amount)).quantize(Decimal("0.01"))
    except ArithmeticError:  # InvalidOperation: not a number, shown as written
        return str(amount)
    return f"{value} 元" if _current == "zh-CN" else f"{value} yuan"


def local_time(when: datetime | str | None, tz: tzinfo | None = None) -> str:
    """``2026-12-06 14:05``: the site's wall clock, to the minute, as Chinese staff write it.

    The one format for every time a person reads (tables, messages, the HTML report); JSON
    keeps ISO 8601. ``when`` may be an ISO 8601 string (then ``tz`` defaults to its own
    offset); None is ``-``.
    """
    if isinstance(when, datetime):  # the common case first: the rules call this per account
        return f"{when.astimezone(tz or when.tzinfo):%Y-%m-%d %H:%M}"
    if not when:
        return "-"
    parsed = datetime.fromisoformat(when)
    return f"{parsed.astimezone(tz or parsed.tzinfo):%Y-%m-%d %H:%M}"


def language_from_argv(argv: Sequence[str]) -> str | None:
    """The value of ``--lang`` in a command line (read before the CLI is built, for --help)."""
    for i, arg in enumerate(argv):
        if arg == "--lang" and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--lang="):
            return arg.split("=", 1)[1]
    return None


def site_language_from_file(path: str | None) -> str | None:
    """``[site] language`` of a config file, read leniently (the command reports errors)."""
    if not path:
        return None
    import tomllib

    try:
        data = tomllib.loads(Path(path).expanduser().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    site = data.get("site")
    language = site.get("language") if isinstance(site, dict) else None
    return language if isinstance(language, str) else None


def config_path_from_argv(argv: Sequence[str], environ: Mapping[str, str]) -> str | None:
    for i, arg in enumerate(argv):
        if arg == "--config" and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--config="):
            return arg.split("=", 1)[1]
    return environ.get("METERCTL_CONFIG") or None


def setup_from_command_line(argv: Sequence[str], environ: Mapping[str, str] | None = None) -> str:
    """Choose and set the language from a command line and the environment; return it."""
    env = os.environ if environ is None else environ
    site = site_language_from_file(config_path_from_argv(argv, env))
    try:
        language = choose(language_from_argv(argv), env, site)
    except ValueError:
        language = choose(None, env, site)  # the CLI reports the bad --lang itself
    set_language(language)
    return language
