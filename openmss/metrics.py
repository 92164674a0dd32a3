"""Prometheus metrics, in a registry owned by the running application (no global state)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.smtp_sessions = Counter(
            "openmss_smtp_sessions_total", "SMTP connections accepted", ["service"], registry=self.registry
        )
        self.smtp_accepted = Counter(
            "openmss_smtp_messages_accepted_total",
            "Messages accepted (250 after commit)",
            ["service"],
            registry=self.registry,
        )
        self.smtp_rejected = Counter(
            "openmss_smtp_rejections_total",
            "Commands refused, by reason",
            ["service", "reason"],
            registry=self.registry,
        )
        self.smtp_bytes = Counter(
            "openmss_smtp_received_bytes_total", "Message bytes accepted", ["service"], registry=self.registry
        )
        self.auth_failures = Counter(
            "openmss_auth_failures_total", "Failed logins", ["service"], registry=self.registry
        )
        self.store_seconds = Histogram(
            "openmss_store_commit_seconds",
            "Time from end of DATA to durable commit",
            registry=self.registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )
        self.queue_deliveries = Counter(
            "openmss_queue_deliveries_total",
            "Outbound delivery attempts by result",
            ["result"],
            registry=self.registry,
        )
        self.queue_waiting = Gauge(
            "openmss_queue_waiting_recipients",
            "Recipients waiting in the outbound queue",
            registry=self.registry,
        )
        self.group_commits = Counter(
            "openmss_group_commits_total",
            "Database commits made by the group committer",
            registry=self.registry,
        )

        self.group_commit_units = Counter(
            "openmss_group_commit_units_total",
            "Units of work committed by the group committer",
            registry=self.registry,
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
