"""Debian's GnuPG (2.2) driven as a user would: a key of its own, encrypt, decrypt, sign."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest


class GnuPG:
    def __init__(self, home: Path) -> None:
        path = shutil.which("gpg")
        if path is None:
            pytest.skip("gpg is not installed (Debian package gnupg)")
        self.gpg = path
        self.home = home
        home.mkdir(mode=0o700, parents=True, exist_ok=True)

    def run(
        self, *args: str, data: bytes | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[bytes]:
        env = {**os.environ, "GNUPGHOME": str(self.home)}
        done = subprocess.run(
            [self.gpg, "--batch", "--yes", "--pinentry-mode", "loopback", "--passphrase", "", *args],
            input=data,
            capture_output=True,
            env=env,
            timeout=60,
        )
        if check and done.returncode != 0:
            raise AssertionError(f"gpg {' '.join(args)} failed: {done.stderr.decode(errors='replace')}")
        return done

    def version(self) -> str:
        return self.run("--version").stdout.decode().splitlines()[0]

    def generate(self, address: str) -> bytes:
        """A new key for ``address`` (GnuPG's defaults: ed25519/cv25519); its public key."""
        self.run("--quick-gen-key", f"Test <{address}>", "future-default", "default", "never")
        return self.export(address)

    def export(self, address: str) -> bytes:
        return self.run("--export", address).stdout

    def import_key(self, data: bytes) -> None:
        self.run("--import", data=data)

    def decrypt(self, data: bytes) -> bytes:
        return self.run("--decrypt", data=data).stdout

    def encrypt(self, data: bytes, recipient: str) -> bytes:
        return self.run("--armor", "--trust-model", "always", "--encrypt", "-r", recipient, data=data).stdout

    def sign_detached(self, data: bytes, signer: str) -> bytes:
        return self.run("--armor", "--local-user", signer, "--detach-sign", data=data).stdout

    def revoke(self, address: str) -> bytes:
        """A revocation of ``address``'s key, applied here too; returns the revoked public key."""
        fpr = next(
            line.split(":")[9]
            for line in self.run("--with-colons", "--list-keys", address).stdout.decode().splitlines()
            if line.startswith("fpr:")
        )
        revocation = (self.home / "openpgp-revocs.d" / f"{fpr}.rev").read_text()
        # GnuPG writes the certificate with a ':' before the armour so that it is not imported by mistake.
        self.import_key(revocation.replace(":-----BEGIN", "-----BEGIN").encode())
        return self.export(address)
