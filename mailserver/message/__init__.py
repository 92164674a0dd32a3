"""Message handling helpers: header parsing, trace fields, chunked bodies."""
