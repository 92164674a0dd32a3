"""The mail server: SMTP submission and relay, local delivery, the outbound queue, the store."""
