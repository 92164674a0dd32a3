"""SMTP: submission (RFC 6409), relay between operators (RFC 5321), on aiosmtpd."""
