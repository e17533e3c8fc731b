"""Account and meter numbers that cannot be confused: no look-alikes, no invisible characters.

``Ａ001`` (full-width) and ``A001`` look the same on a screen and in a report but are two
accounts to the database; so are ``A001`` and ``A0\\u200b01`` (a zero-width space). Numbers are
checked here on the way in: a number that changes under Unicode NFKC normalisation
(full-width letters and digits, ligatures, superscripts ...) or holds an invisible format
character (zero-width space/joiners, word joiner, BOM, bidirectional marks) is refused with a
sentence naming the character and the number it would be confused with.

Pure: no I/O.
"""

from __future__ import annotations

import unicodedata


def confusable_problem(value: str, what: str) -> str | None:
    """Why ``value`` (an account or meter number) is refused, or None when it is clean."""
    for char in value:
        if unicodedata.category(char) in ("Cf", "Cc", "Zl", "Zp"):
            name = unicodedata.name(char, "unnamed")
            return (
                f"{what} {value!r} contains the invisible character U+{ord(char):04X} ({name}); "
                "remove it"
            )
    normal = unicodedata.normalize("NFKC", value)
    if normal != value:
        return (
            f"{what} {value!r} contains look-alike characters (full-width or compatibility "
            f"forms); it would be confused with {normal!r}: write it as {normal!r}"
        )
    return None
