"""Settings: defaults that run out of the box, a TOML file, then ``OPENMSS_*`` variables.

Precedence (highest first): explicit keyword arguments, environment variables
(``OPENMSS_DATABASE_URL``...), the TOML file named by ``OPENMSS_CONFIG`` (or ``--config``),
the defaults below.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic import Field, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

MiB = 1024 * 1024


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="OPENMSS_", extra="forbid", validate_default=True)

    # Where everything local lives: the SQLite database, generated certificates, keys.
    data_dir: Path = Path("./data")
    # Empty means SQLite in data_dir; PostgreSQL with postgresql+asyncpg://user@host/db.
    database_url: str = ""
    # Domains whose mailboxes live here.
    domains: list[str] = Field(default_factory=lambda: ["openmss.localhost"])
    # Our name in greetings, Received: lines and DSNs.
    hostname: str = "mail.openmss.localhost"
    # The account that receives mail to postmaster@ of every served domain (RFC 5321 §4.5.1:
    # a server must accept mail to its postmaster), unless an account postmaster@<domain>
    # exists. Empty: only such accounts receive it.
    postmaster: str = ""

    listen_host: str = "127.0.0.1"
    smtp_port: int = 2525  # inbound relay from trusted operators (STARTTLS + client certificate)
    submission_port: int = 2587  # STARTTLS (RFC 6409 + RFC 3207)
    submissions_port: int = 2465  # implicit TLS (RFC 8314)
    imap_port: int = 2143
    imaps_port: int = 2993
    http_port: int = 8080

    # TLS: empty means a local CA and server certificate generated in data_dir/tls on first start.
    tls_cert: Path | None = None
    tls_key: Path | None = None
    # CA bundle that signs the certificates of peer operators (IGC-Santé in production).
    # Empty means our own CA (fine for a single server or tests).
    peer_ca_file: Path | None = None
    # The trust list: the national XML allow-list or the local "domain | DN" format.
    trust_list: Path | None = None
    # How often (seconds, at most) the running server looks whether that file changed.
    trust_list_check_seconds: float = 2.0
    # Patients' domains (<INS matricule>@patient.<domain>), whose addresses follow the patients'
    # messaging policy (directory/policy.py). Empty: patient.<each served domain>.
    patient_domains: list[str] = Field(default_factory=list)
    # Static routes for outbound relay: domain -> "host:port".
    routes: dict[str, str] = Field(default_factory=dict)

    # The HTTP port speaks TLS (same certificate as the mail ports): it carries passwords
    # (the account API) and WKD, which clients only fetch over HTTPS.
    http_tls: bool = True
    # The directory search (/directory/search, /fhir): true asks HTTP Basic credentials of one
    # of our accounts, as operators restrict their directory to professionals; false opens it
    # to anyone, like the national directory (red-listed mailboxes never appear either way).
    directory_search_auth: bool = True

    # Encryption at rest (see docs/encryption.md). Every message delivered to a mailbox is
    # stored encrypted to its owner's OpenPGP key; turning this off is for benchmarks only.
    encrypt_mail: bool = True
    # argon2id cost of the key that wraps an account's keys (RFC 9106 second recommended option).
    key_kdf_memory_kib: int = 65536
    key_kdf_time_cost: int = 3
    key_kdf_parallelism: int = 4
    # The key that encrypts messages waiting in the outbound queue, kept out of the database:
    # OPENMSS_QUEUE_KEY (32 bytes, base64) or this file (created 0600 on first start; default
    # data_dir/keys/queue.key; in production put it outside the data folder).
    queue_key: str = ""
    queue_key_file: Path | None = None
    # Optional escrow: an OpenPGP public key that every account's data key is also encrypted
    # to, so that the operator can recover mail after a lost password. Off by default.
    escrow_key_file: Path | None = None

    max_message_size: int = 25 * MiB
    max_recipients: int = 100
    # IMAP: opened headers kept in memory for header SEARCH while an account has a session
    # (mailserver/imap/headercache.py), for all accounts together. 0 turns the cache off.
    imap_header_cache_bytes: int = 128 * MiB

    # Outbound queue.
    queue_poll_seconds: float = 1.0
    queue_retry_schedule: list[float] = Field(
        default_factory=lambda: [60.0, 300.0, 900.0, 1800.0, 3600.0, 7200.0, 14400.0]
    )
    queue_lifetime_seconds: float = 5 * 24 * 3600.0
    queue_connect_timeout: float = 30.0

    # Failed logins: after login_max_failures for one account, or login_max_failures_per_address
    # from one client address, within login_window_seconds, further attempts are refused until
    # the window has passed.
    login_max_failures: int = 5
    login_max_failures_per_address: int = 20
    login_window_seconds: float = 300.0
    login_failure_delay: float = 1.0

    # Group commit: under load (the previous group held several units), how long the writer
    # waits for more work once the first unit arrived.
    commit_batch_delay: float = 0.002
    # Groups handed to the storage backend and not yet committed (the next one travels while
    # the current one commits; the backend still commits them in order).
    commit_in_flight: int = 4
    commit_batch_max: int = 256

    # Store accepted messages in a storage worker process (its own interpreter and GIL, so a
    # second core works for SMTP sessions); off: a writer thread of the main process.
    storage_process: bool = True

    log_level: str = "INFO"
    log_format: str = "json"  # or "text"
    auto_migrate: bool = True

    @field_validator("domains", "patient_domains", mode="after")
    @classmethod
    def _lower_domains(cls, v: list[str]) -> list[str]:
        return [d.strip().lower().rstrip(".") for d in v if d.strip()]

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        config = settings_cls.model_config.get("toml_file") or os.environ.get("OPENMSS_CONFIG")
        if config:
            path = Path(str(config))
            if not path.is_file():
                raise FileNotFoundError(f"settings file not found: {path}")
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=path))
        return tuple(sources)

    # Derived values ------------------------------------------------------------------------

    @property
    def effective_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{(self.data_dir / 'openmss.sqlite3').resolve()}"

    @property
    def is_sqlite(self) -> bool:
        return self.effective_database_url.startswith("sqlite")

    @property
    def tls_dir(self) -> Path:
        return self.data_dir / "tls"

    @property
    def effective_queue_key_file(self) -> Path:
        return self.queue_key_file or self.data_dir / "keys" / "queue.key"

    def is_local_domain(self, domain: str) -> bool:
        return domain.lower().rstrip(".") in self.domains


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Settings from the environment, an optional TOML file and explicit overrides."""
    cls: type[Settings] = Settings
    if config_file is not None:
        config = SettingsConfigDict(**{**Settings.model_config, "toml_file": config_file})
        cls = type("FileSettings", (Settings,), {"model_config": config})
    return cls(**overrides)
