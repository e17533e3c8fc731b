from __future__ import annotations

from pathlib import Path

from policies import REASON_CODES, RULE_ERROR

DOC = Path(__file__).resolve().parents[2] / "docs" / "policies.md"


def test_every_reason_code_is_documented() -> None:
    text = DOC.read_text(encoding="utf-8")
    codes = [code for codes in REASON_CODES.values() for code in codes] + [RULE_ERROR]
    missing = [code for code in codes if f"`{code}`" not in text]
    assert not missing


def test_reason_codes_are_unique() -> None:
    codes = [code for codes in REASON_CODES.values() for code in codes]
    assert len(codes) == len(set(codes))
