"""``openmss trust import FILE`` and ``openmss trust list``: the trust list as the operator sees it.

Import checks the file (the national ``ListeBlancheMSSante`` XML or the local ``domain | DN``
format, ``directory.trust``) and installs it, byte for byte, at the path of the ``trust_list``
setting, atomically: a temporary file in the same folder is written, flushed to disk (fsync),
checked again as written, then renamed over the old one, and the folder is synced so that the
rename itself survives a crash (POSIX ``rename`` replaces atomically: a running server reads
either the old list or the new one, never half a file). Running servers notice the new file
within ``trust_list_check_seconds`` (``TrustListSource`` compares mtime, size and inode) and
load it without restart.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from pathlib import Path

from directory.trust import CanonicalDN, TrustList, TrustListError, load_trust_list
from openmss.settings import Settings

# RFC 4514 §2.4: characters escaped in an attribute value.
_SPECIAL = frozenset(',+"\\<>;=')


def format_dn(dn: CanonicalDN) -> str:
    """A canonical DN as an RFC 4514 string, in the form the server compares (attributes
    sorted, values case folded)."""

    def escape(value: str) -> str:
        text = "".join(f"\\{ch}" if ch in _SPECIAL else ch for ch in value)
        if text.startswith(("#", " ")):
            text = "\\" + text
        return text[:-1] + "\\ " if text.endswith(" ") else text

    return ", ".join(f"{name}={escape(value)}" for name, value in dn)


def _fsync_folder(folder: Path) -> None:
    with contextlib.suppress(OSError):  # not every file system lets a folder be opened
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def install(data: bytes, target: Path) -> TrustList:
    """Check *data* and put it at *target* atomically; the list it holds.

    Raises :class:`TrustListError` (nothing changed) when the content is not a trust list or
    trusts no domain, and :class:`OSError` when the folder is not writable.
    """
    target = target.absolute()
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    temporary = Path(name)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(temporary, 0o644)  # public information; mkstemp made it 0600
        # Checked as written, with the very parser the server uses.
        trust_list = load_trust_list(temporary)
        if len(trust_list) == 0:
            raise TrustListError("it trusts no domain: refusing to empty the trust space")
        os.replace(temporary, target)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    _fsync_folder(target.parent)
    return trust_list


def _dn_count(trust_list: TrustList) -> int:
    return sum(len(domain.certificate_dns) for domain in trust_list)


def cmd_trust_import(settings: Settings, source: str) -> int:
    """0 when installed; 1 when the file is refused; 2 when misconfigured or unreadable."""
    if settings.trust_list is None:
        print(
            "error: no trust_list setting: set it (OPENMSS_TRUST_LIST or the settings file) to the"
            " path the server reads the trust list from",
            file=sys.stderr,
        )
        return 2
    try:
        data = sys.stdin.buffer.read() if source == "-" else Path(source).read_bytes()
    except OSError as exc:
        print(f"error: cannot read {source}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    try:
        trust_list = install(data, settings.trust_list)
    except TrustListError as exc:
        print(f"error: {source} refused, the trust list is unchanged: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"error: cannot write {settings.trust_list}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    without = [d.name for d in trust_list if not d.certificate_dns]
    generated = f", generated {trust_list.generated_at}" if trust_list.generated_at else ""
    print(
        f"installed {settings.trust_list}: {len(trust_list)} domains, {_dn_count(trust_list)} certificate"
        f" DNs{generated}; running servers load it within {settings.trust_list_check_seconds:g} s"
    )
    if without:
        print(f"warning: {len(without)} domains have no usable certificate DN and cannot relay to us")
    return 0


def cmd_trust_list(settings: Settings, source: str | None = None) -> int:
    """Print ``domain<TAB>DN`` lines of the configured trust list (or of *source*)."""
    path = Path(source) if source else settings.trust_list
    if path is None:
        print("no trust list configured (trust_list setting): no other operator is trusted")
        return 0
    try:
        trust_list = load_trust_list(path)
    except (OSError, TrustListError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    generated = f", generated {trust_list.generated_at}" if trust_list.generated_at else ""
    print(f"# {path}: {len(trust_list)} domains, {_dn_count(trust_list)} certificate DNs{generated}")
    for name in trust_list.domains():
        entry = trust_list.get(name)
        assert entry is not None
        dns = sorted(format_dn(dn) for dn in entry.certificate_dns)
        for dn in dns or ["(no usable certificate DN)"]:
            print(f"{name}\t{dn}")
    return 0
