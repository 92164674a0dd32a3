"""The durable outbound queue: messages waiting for other operators, retries, DSNs."""
