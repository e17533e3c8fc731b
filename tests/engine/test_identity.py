"""The operator's identity comes from the kernel, never from the environment (issue 15.2)."""

from __future__ import annotations

import os
import pwd
from pathlib import Path

import pytest

from engine.config import parse_config
from engine.roles import Identity, OsIdentity, Role, check_role, login_uid, user_name

ME = pwd.getpwuid(os.geteuid()).pw_name
OTHER = pwd.getpwuid(1).pw_name  # a second account every Linux system has (daemon)
PERSON = pwd.getpwuid(65534).pw_name  # nobody: stands for a person who logged in


def proc_with_loginuid(tmp_path: Path, value: str) -> Path:
    (tmp_path / "self").mkdir(parents=True)
    (tmp_path / "self" / "loginuid").write_text(value, encoding="ascii")
    return tmp_path


def config(shared: str = "") -> object:
    return parse_config(
        f'[roles]\nsupervisor = ["{ME}", "{OTHER}", "{PERSON}"]\nshared_accounts = [{shared}]\n'
    )


@pytest.mark.parametrize("variable", ["USER", "LOGNAME", "LNAME", "USERNAME", "SUDO_USER"])
def test_no_environment_variable_changes_who_you_are(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, variable: str
) -> None:
    monkeypatch.setenv(variable, "someone-else")
    monkeypatch.setenv("SUDO_UID", "1")
    identity = OsIdentity(proc_with_loginuid(tmp_path, "4294967295")).identify(config())
    assert identity == Identity(ME, True, identity.via)
    assert identity.user == user_name(os.geteuid()) != "someone-else"


def test_root_through_sudo_is_the_person_who_logged_in(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setenv("SUDO_USER", OTHER)  # forged: ignored
    identity = OsIdentity(proc_with_loginuid(tmp_path, "65534")).identify(config())
    assert identity.user == PERSON and identity.attributable
    assert "login uid" in identity.via


def test_root_without_a_login_uid_stays_root(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    identity = OsIdentity(proc_with_loginuid(tmp_path, "4294967295")).identify(config())
    assert identity.user == "root" and identity.attributable


def test_a_shared_account_is_the_person_behind_it_or_nobody(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1)
    shared = config(f'"{OTHER}"')
    person = OsIdentity(proc_with_loginuid(tmp_path / "a", "65534")).identify(shared)
    assert person.user == PERSON and person.attributable

    unknown = OsIdentity(proc_with_loginuid(tmp_path / "b", "4294967295")).identify(shared)
    assert unknown.user == OTHER and not unknown.attributable
    refused = check_role(shared, unknown, Role.OPERATOR, "notices issue")  # type: ignore[arg-type]
    assert not refused.allowed and "shared account" in refused.reason

    # Without the shared_accounts entry the account is one person like any other.
    plain = OsIdentity(proc_with_loginuid(tmp_path / "c", "65534")).identify(config())
    assert plain.user == OTHER and plain.attributable


def test_names_and_login_uid_edge_cases(tmp_path: Path) -> None:
    assert user_name(0) == "root"
    assert user_name(2_000_000_123) == "uid:2000000123"  # no passwd entry; ':' is no name
    assert login_uid(tmp_path) is None  # no such file
    assert login_uid(proc_with_loginuid(tmp_path, "garbage")) is None
