"""Signed checkpoints of the audit chain, kept outside the database (the anchor file).

The HMAC chain of :mod:`engine.audit` shows an edit only to someone who holds its key, and
whoever holds the key (every process that appends records) can re-hash an edited chain, or
delete the whole trail and its head. A *checkpoint* closes that gap: an Ed25519 signature over

    ``meterctl-audit-checkpoint|1|SEQ|HASH|DIGEST|AT``

where SEQ/HASH are the chain's last record and DIGEST a plain SHA-256 running over every record
up to it (its fields and its stored hash), so the checkpoint vouches for the *content* of the
whole prefix, checkable with the public key alone. Checkpoints are appended (``O_APPEND``) as
JSON lines to ``[audit] anchor_file`` and copied into the ``audit_checkpoints`` table;
:func:`verify_checkpoints` walks the chain once and reports the trail that contradicts one:
wiped, truncated, edited or re-hashed before the last checkpoint, or an anchor file shorter
than the database's copy.

Keys (created by ``meterctl db init``, never a built-in default; docs/security.md):

- ``[audit] key_file`` (default ``meterctl-audit.key`` beside the config file): the chain's
  HMAC key, 0600. ``[audit] key`` inline is still accepted, except the old public default.
- ``[audit] signing_key_file`` (default ``meterctl-audit-signing.pem``): the Ed25519 private
  key, 0600; only the processes that make checkpoints (``serve``, admins) need to read it.
- ``[audit] public_key_file`` (default ``meterctl-audit-public.pem``): all ``audit verify``
  needs, besides the anchor.

Pure parts (formats, signatures, the running digest) do no I/O; the file helpers are small.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import stat
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from sqlalchemy import Engine, insert, select
from sqlmodel import Session

from base.errors import ConfigError
from base.i18n import N_, Msg
from engine.config import DEFAULT_AUDIT_KEY_FILE, PUBLIC_DEFAULT_AUDIT_KEY, Config
from engine.db.database import read_session, transaction
from engine.db.models import AUDIT, AUDIT_CHECKPOINTS

GENESIS_DIGEST = "0" * 64
DEFAULT_KEY_FILE = DEFAULT_AUDIT_KEY_FILE
DEFAULT_SIGNING_KEY_FILE = "meterctl-audit-signing.pem"
DEFAULT_PUBLIC_KEY_FILE = "meterctl-audit-public.pem"
DEFAULT_ANCHOR_FILE = "meterctl-audit.anchor"
PUBLIC_DEFAULT_KEY = PUBLIC_DEFAULT_AUDIT_KEY


# -- the format (pure) ---------------------------------------------------------------------


@dataclass(frozen=True)
class Checkpoint:
    """A signed statement: the chain's record ``seq`` has ``hash`` and the prefix ``digest``."""

    seq: int
    hash: str
    digest: str
    at: str  # ISO 8601 UTC
    signature: str = ""  # hex Ed25519 signature of :meth:`message`

    def message(self) -> bytes:
        return f"meterctl-audit-checkpoint|1|{self.seq}|{self.hash}|{self.digest}|{self.at}".encode(
            "ascii"
        )

    def to_line(self) -> str:
        return json.dumps(
            {
                "v": 1,
                "seq": self.seq,
                "hash": self.hash,
                "digest": self.digest,
                "at": self.at,
                "sig": self.signature,
            },
            sort_keys=True,
            separators=(",", ":"),
        )

    @classmethod
    def from_line(cls, line: str) -> Checkpoint:
        """Parse one anchor line; ValueError names what is wrong."""
        data = json.loads(line)
        if not isinstance(data, dict) or data.get("v") != 1:
            raise ValueError("not a version-1 checkpoint")
        seq, fields = data.get("seq"), [data.get(k) for k in ("hash", "digest", "at", "sig")]
        if not isinstance(seq, int) or isinstance(seq, bool) or seq < 0:
            raise ValueError(Msg(N_("seq is not a record number")))
        if not all(isinstance(f, str) and f.isascii() for f in fields):
            raise ValueError(Msg(N_("hash, digest, at and sig must be ASCII strings")))
        return cls(seq, *(str(f) for f in fields))

    def describe(self) -> str:
        return f"the checkpoint of {self.at} (record {self.seq})"


def sign_checkpoint(private_key: Ed25519PrivateKey, checkpoint: Checkpoint) -> Checkpoint:
    signature = private_key.sign(checkpoint.message()).hex()
    return Checkpoint(checkpoint.seq, checkpoint.hash, checkpoint.digest, checkpoint.at, signature)


def signature_valid(public_key: Ed25519PublicKey, checkpoint: Checkpoint) -> bool:
    try:
        public_key.verify(bytes.fromhex(checkpoint.signature), checkpoint.message())
    except (InvalidSignature, ValueError):
        return False
    return True


def next_digest(digest: str, row: Iterable[Any]) -> str:
    """The running content digest after one record ``(seq, at, actor, action, subject,
    payload, prev_hash, hash)``: unkeyed, so anyone can recompute it."""
    seq, at, actor, action, subject, payload, prev_hash, hash_ = row
    when = at.astimezone(UTC).isoformat() if isinstance(at, datetime) else str(at)
    text = json.dumps(
        [seq, when, actor, action, subject, payload, prev_hash, hash_],
        ensure_ascii=False,
        separators=(",", ":"),
    )
    return hashlib.sha256(f"{digest}\n{text}".encode()).hexdigest()


# -- files -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class AuditFiles:
    key: Path | None  # None when the key is given inline
    signing_key: Path
    public_key: Path
    anchor: Path


def audit_files(config: Config) -> AuditFiles:
    a = config.audit
    key = (
        None if (a.key and not a.key_file) else config.resolve_path(a.key_file or DEFAULT_KEY_FILE)
    )
    return AuditFiles(
        key,
        config.resolve_path(a.signing_key_file or DEFAULT_SIGNING_KEY_FILE),
        config.resolve_path(a.public_key_file or DEFAULT_PUBLIC_KEY_FILE),
        config.resolve_path(a.anchor_file or DEFAULT_ANCHOR_FILE),
    )


def _write_new(path: Path, data: bytes, mode: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        os.fchmod(fd, mode)  # whatever the umask
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def ensure_installation_keys(config: Config) -> list[Path]:
    """Create the keys this installation lacks (``db init``); returns the files created.

    An existing file is never replaced. A public key without its private key stays as it is
    (a new pair could not continue its checkpoints): checkpoints are then not made.
    """
    files = audit_files(config)
    created: list[Path] = []
    try:
        if files.key is not None and not files.key.exists():
            _write_new(files.key, (secrets.token_hex(32) + "\n").encode("ascii"), 0o600)
            created.append(files.key)
        if not files.signing_key.exists() and not files.public_key.exists():
            private = Ed25519PrivateKey.generate()
            pem = private.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
            _write_new(files.signing_key, pem, 0o600)
            created.append(files.signing_key)
        if files.signing_key.exists() and not files.public_key.exists():
            public = load_signing_key(config).public_key()
            pem = public.public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            _write_new(files.public_key, pem, 0o644)
            created.append(files.public_key)
    except OSError as exc:
        raise ConfigError(
            Msg(
                N_(
                    "cannot create the audit keys ({filename}: {strerror}); set [audit] key_file, signing_key_file and public_key_file to a writable folder"
                ),
                filename=exc.filename,
                strerror=exc.strerror,
            )
        ) from None
    return created


def load_signing_key(config: Config) -> Ed25519PrivateKey:
    path = audit_files(config).signing_key
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except OSError as exc:
        raise ConfigError(
            Msg(
                N_("config key audit.signing_key_file: cannot read {path}: {strerror}"),
                path=path,
                strerror=exc.strerror,
            )
        ) from None
    except (ValueError, TypeError):
        raise ConfigError(
            Msg(N_("{path} is not an unencrypted Ed25519 private key (PEM)"), path=path)
        ) from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigError(Msg(N_("{path} is not an Ed25519 private key"), path=path))
    return key


def load_public_key(config: Config) -> Ed25519PublicKey | None:
    """The checkpoints' public key, or None when the file does not exist."""
    path = audit_files(config).public_key
    try:
        key = serialization.load_pem_public_key(path.read_bytes())
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ConfigError(
            Msg(
                N_("config key audit.public_key_file: cannot read {path}: {strerror}"),
                path=path,
                strerror=exc.strerror,
            )
        ) from None
    except (ValueError, TypeError):
        raise ConfigError(Msg(N_("{path} is not an Ed25519 public key (PEM)"), path=path)) from None
    if not isinstance(key, Ed25519PublicKey):
        raise ConfigError(Msg(N_("{path} is not an Ed25519 public key"), path=path))
    return key


def read_anchor(path: Path) -> tuple[list[Checkpoint], list[str]] | None:
    """(checkpoints, problems) from the anchor file; None when it does not exist."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ConfigError(
            Msg(
                N_("config key audit.anchor_file: cannot read {path}: {strerror}"),
                path=path,
                strerror=exc.strerror,
            )
        ) from None
    found: list[Checkpoint] = []
    problems: list[str] = []
    for number, line in enumerate(raw.split(b"\n"), start=1):
        if not line.strip():
            continue
        try:
            found.append(Checkpoint.from_line(line.decode("utf-8")))
        except (ValueError, UnicodeDecodeError) as exc:
            problems.append(f"anchor {path} line {number} is not a checkpoint ({exc})")
    return found, problems


def append_anchor(path: Path, checkpoint: Checkpoint) -> None:
    """Append one line, opened ``O_APPEND`` (never rewritten), and flush it to disk."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (checkpoint.to_line() + "\n").encode("ascii"))
        os.fsync(fd)
    finally:
        os.close(fd)


def permission_warnings(config: Config) -> list[Msg]:
    """Sentences about key files others can read and an anchor others can write."""
    files = audit_files(config)
    warnings: list[Msg] = []
    secret_files = [files.key, files.signing_key]
    for value in (config.hooks.payment_key_file, config.dlt645.secrets_file):
        if value:
            secret_files.append(config.resolve_path(value))
    if config.source is not None and (config.hooks.payment_key or config.audit.key):
        secret_files.append(config.source)  # holds a key inline
    for path in secret_files:
        mode = _mode(path)
        if mode is not None and mode & 0o077:
            warnings.append(
                Msg(
                    N_(
                        "{path} holds a secret and other users can read it (mode {mode}): "
                        "chmod 600 {path}"
                    ),
                    path=path,
                    mode=f"{mode:04o}",
                )
            )
    mode = _mode(files.anchor)
    if mode is not None and mode & 0o022:
        warnings.append(
            Msg(
                N_(
                    "the audit anchor {path} can be written by other users (mode {mode}): "
                    "chmod 644 {path} (better: make it append-only, chattr +a)"
                ),
                path=files.anchor,
                mode=f"{mode:04o}",
            )
        )
    return warnings


def _mode(path: Path | None) -> int | None:
    if path is None:
        return None
    try:
        return stat.S_IMODE(path.stat().st_mode)
    except OSError:
        return None


# -- making and checking checkpoints -----------------------------------------------------------

_ROW_COLUMNS = (
    AUDIT.c.seq,
    AUDIT.c.at,
    AUDIT.c.actor,
    AUDIT.c.action,
    AUDIT.c.subject,
    AUDIT.c.payload,
    AUDIT.c.prev_hash,
    AUDIT.c.hash,
)


def _rows(session: Session, after: int, chunk: int = 5000) -> Iterator[Any]:
    while True:
        rows = session.execute(
            select(*_ROW_COLUMNS).where(AUDIT.c.seq > after).order_by(AUDIT.c.seq).limit(chunk)
        ).all()
        if not rows:
            return
        yield from rows
        after = int(rows[-1][0])


def _db_checkpoints(session: Session) -> list[Checkpoint]:
    rows = session.execute(
        select(
            AUDIT_CHECKPOINTS.c.seq,
            AUDIT_CHECKPOINTS.c.hash,
            AUDIT_CHECKPOINTS.c.digest,
            AUDIT_CHECKPOINTS.c.at,
            AUDIT_CHECKPOINTS.c.signature,
        ).order_by(AUDIT_CHECKPOINTS.c.id)
    ).all()
    return [Checkpoint(int(r[0]), str(r[1]), str(r[2]), str(r[3]), str(r[4])) for r in rows]


def make_checkpoint(engine: Engine, config: Config, now: datetime) -> Checkpoint | None:
    """Sign the chain's head and append it to the anchor and the table; None if unchanged.

    The chain since the last checkpoint is checked first (links and content digest from the
    last checkpoint on): a checkpoint never vouches for a chain that does not continue the
    one already signed. Raises ConfigError when the signing key cannot be read.
    """
    private_key = load_signing_key(config)
    files = audit_files(config)
    anchored = read_anchor(files.anchor)
    with read_session(engine) as session:
        signed = _db_checkpoints(session)
        last = _latest(signed, anchored[0] if anchored else [])
        digest, prev_hash, seq = GENESIS_DIGEST, "0" * 64, 0
        start = 0
        if last is not None:
            start_row = session.execute(
                select(*_ROW_COLUMNS).where(AUDIT.c.seq == last.seq)
            ).first()
            if last.seq and (start_row is None or start_row[7] != last.hash):
                raise ConfigError(
                    Msg(
                        N_("the audit trail contradicts {value}: run meterctl audit verify"),
                        value=last.describe(),
                    )
                )
            digest, prev_hash, seq, start = last.digest, last.hash, last.seq, last.seq
        for row in _rows(session, start):
            if int(row[0]) != seq + 1 or row[6] != prev_hash:
                raise ConfigError(
                    Msg(
                        N_(
                            "the audit trail is broken at record {value}: run meterctl audit verify"
                        ),
                        value=seq + 1,
                    )
                )
            digest, prev_hash, seq = next_digest(digest, row), str(row[7]), int(row[0])
    if seq == 0 or (last is not None and last.seq == seq):
        return None
    checkpoint = sign_checkpoint(
        private_key, Checkpoint(seq, prev_hash, digest, now.astimezone(UTC).isoformat())
    )
    append_anchor(files.anchor, checkpoint)
    with transaction(engine, audited=False) as session:
        session.execute(
            insert(AUDIT_CHECKPOINTS).values(
                seq=checkpoint.seq,
                hash=checkpoint.hash,
                digest=checkpoint.digest,
                at=checkpoint.at,
                signature=checkpoint.signature,
            )
        )
    return checkpoint


def _latest(*sources: list[Checkpoint]) -> Checkpoint | None:
    found = [c for source in sources for c in source]
    return max(found, key=lambda c: c.seq) if found else None


def checkpoint_if_possible(engine: Engine, config: Config, now: datetime) -> Checkpoint | None:
    """:func:`make_checkpoint` when this process can read the signing key; else nothing."""
    if not os.access(audit_files(config).signing_key, os.R_OK):
        return None
    return make_checkpoint(engine, config, now)


@dataclass(frozen=True)
class CheckpointReport:
    """What :func:`verify_checkpoints` found: ``ok`` unless the trail contradicts a checkpoint."""

    ok: bool
    checkpoints: int  # valid checkpoints checked
    bad_seq: int | None = None
    problem: str = ""
    notes: tuple[str, ...] = ()


def verify_checkpoints(engine: Engine, config: Config) -> CheckpointReport:
    """Check the trail against every checkpoint (anchor file and table), with the public key.

    Reports, first found: a checkpoint whose signature fails (forged or edited); the anchor
    missing or lacking checkpoints the database holds (deleted or truncated); the chain
    shorter than a checkpoint (wiped or truncated: ``bad_seq`` is the first missing record);
    a record whose hash or content differs from what a checkpoint signed (edited or re-hashed:
    ``bad_seq`` is the first record after the last checkpoint that still holds).
    """
    public_key = load_public_key(config)
    files = audit_files(config)
    anchored = read_anchor(files.anchor)
    with read_session(engine) as session:
        in_db = _db_checkpoints(session)
        notes: list[str] = []
        if public_key is None:
            if anchored or in_db:
                return CheckpointReport(
                    False,
                    0,
                    1,
                    f"checkpoints exist but the public key {files.public_key} is missing: "
                    "they cannot be checked",
                )
            return CheckpointReport(True, 0, notes=("no checkpoints (no public key yet)",))
        anchor_lines, problems = anchored if anchored is not None else ([], [])
        if problems:
            return CheckpointReport(False, 0, None, problems[0])
        for source, items in (("anchor file", anchor_lines), ("audit_checkpoints table", in_db)):
            for item in items:
                if not signature_valid(public_key, item):
                    return CheckpointReport(
                        False,
                        0,
                        item.seq or None,
                        f"{item.describe()} in the {source} has a bad signature "
                        "(forged or edited checkpoint)",
                    )
        anchored_keys = {(c.seq, c.hash, c.digest) for c in anchor_lines}
        missing = [c for c in in_db if (c.seq, c.hash, c.digest) not in anchored_keys]
        if anchored is None and in_db:
            return CheckpointReport(
                False,
                len(in_db),
                None,
                f"the anchor file {files.anchor} is missing but the database holds "
                f"{len(in_db)} signed checkpoints (deleted?)",
            )
        if missing:
            return CheckpointReport(
                False,
                len(anchor_lines),
                None,
                f"the anchor file {files.anchor} lacks {missing[0].describe()} that the "
                "database holds (anchor truncated or replaced?)",
            )
        if not in_db and anchor_lines:
            notes.append("the database holds no copy of the anchor's checkpoints (table emptied?)")
        checkpoints = sorted(
            {(c.seq, c.hash, c.digest, c.at): c for c in anchor_lines + in_db}.values(),
            key=lambda c: c.seq,
        )
        return _walk(session, checkpoints, notes)


def _walk(session: Session, checkpoints: list[Checkpoint], notes: list[str]) -> CheckpointReport:
    by_seq: dict[int, list[Checkpoint]] = {}
    for c in checkpoints:
        by_seq.setdefault(c.seq, []).append(c)
    digest, count, last_good = GENESIS_DIGEST, 0, 0
    for row in _rows(session, 0):
        seq = int(row[0])
        if seq != count + 1:
            break  # a gap: the chain walk of engine.audit names it; checkpoints beyond fail below
        digest, count = next_digest(digest, row), seq
        for c in by_seq.get(seq, ()):
            if c.hash != row[7] or c.digest != digest:
                return CheckpointReport(
                    False,
                    len(checkpoints),
                    last_good + 1,
                    f"records {last_good + 1}..{seq} were edited or re-hashed: record {seq} "
                    f"contradicts {c.describe()}",
                )
            last_good = seq
    beyond = [c for c in checkpoints if c.seq > count]
    if beyond:
        last = beyond[-1]
        what = "wiped" if count == 0 else "truncated or deleted"
        return CheckpointReport(
            False,
            len(checkpoints),
            count + 1,
            f"records {count + 1}..{last.seq} are missing ({what}): the trail ends at record "
            f"{count} and contradicts {last.describe()}",
        )
    return CheckpointReport(True, len(checkpoints), notes=tuple(notes))
