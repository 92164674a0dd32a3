"""BODY and BODYSTRUCTURE (RFC 3501 §7.4.2, grammar in §9), rendered from a MIME tree.

Non-multipart parts::

    (type subtype params id description encoding octets [envelope body] [lines]
     [md5 disposition language location])

``lines`` is given for ``text/*`` parts, and ``envelope body lines`` for message/rfc822 parts
(the encapsulated message).  Multiparts::

    (part1)(part2)... subtype [params disposition language location]

The bracketed extension data is written by BODYSTRUCTURE only, always complete (NIL where a
field is absent), as Dovecot and Cyrus do.  Values are the raw field octets
(:mod:`mailserver.imap.mime`); sizes are octets of the encoded body and lines its line count.

Two cases the grammar cannot express directly are handled as Dovecot does: a ``text/*`` part
without any Content-Type parameter is reported with ``("charset" "us-ascii")`` (the RFC 2045
§5.2 default), and a multipart without any part (no boundary, or no delimiter found) gets one
empty ``text/plain`` part, since ``body-type-mpart`` requires at least one.
"""

from __future__ import annotations

from mailserver.imap.envelope import envelope, imap_nstring, imap_string
from mailserver.imap.mime import Disposition, MimePart, Params

__all__ = ["body", "body_structure", "bodystructure"]

_DEFAULT_TEXT_PARAMS: Params = ((b"charset", b"us-ascii"),)
_EMPTY_PART = b'("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 0 0'


def _params(params: Params, utf8: bool) -> bytes:
    # body-fld-param = "(" string SP string *(SP string SP string) ")" / nil
    if not params:
        return b"NIL"
    return b"(%s)" % b" ".join(
        imap_string(name, utf8=utf8) + b" " + imap_string(value, utf8=utf8) for name, value in params
    )


def _disposition(disposition: Disposition | None, utf8: bool) -> bytes:
    # body-fld-dsp = "(" string SP body-fld-param ")" / nil
    if disposition is None:
        return b"NIL"
    kind, params = disposition
    return b"(%s %s)" % (imap_string(kind, utf8=utf8), _params(params, utf8))


def _language(language: tuple[bytes, ...] | None, utf8: bool) -> bytes:
    # body-fld-lang = nstring / "(" string *(SP string) ")"
    if not language:
        return b"NIL"
    return b"(%s)" % b" ".join(imap_string(tag, utf8=utf8) for tag in language)


def _write(part: MimePart, out: list[bytes], extended: bool, utf8: bool) -> None:
    out.append(b"(")
    if part.is_multipart:
        if part.children:
            for child in part.children:
                _write(child, out, extended, utf8)
        else:
            out.append(_EMPTY_PART + (b" NIL NIL NIL NIL)" if extended else b")"))
        out.append(b" " + imap_string(part.media_subtype, utf8=utf8))
        if extended:
            # body-ext-mpart = body-fld-param SP body-fld-dsp SP body-fld-lang SP body-fld-loc
            out.append(
                b" %s %s %s %s"
                % (
                    _params(part.params, utf8),
                    _disposition(part.disposition, utf8),
                    _language(part.language, utf8),
                    imap_nstring(part.location, utf8=utf8),
                )
            )
        out.append(b")")
        return
    params = part.params
    if not params and part.is_text:
        params = _DEFAULT_TEXT_PARAMS
    # body-fields = body-fld-param SP body-fld-id SP body-fld-desc SP body-fld-enc SP body-fld-octets
    out.append(
        b"%s %s %s %s %s %s %d"
        % (
            imap_string(part.media_type, utf8=utf8),
            imap_string(part.media_subtype, utf8=utf8),
            _params(params, utf8),
            imap_nstring(part.content_id, utf8=utf8),
            imap_nstring(part.description, utf8=utf8),
            imap_string(part.encoding, utf8=utf8),
            part.size,
        )
    )
    if part.message is not None:
        # body-type-msg: ... SP envelope SP body SP body-fld-lines
        out.append(b" " + envelope(part.message, utf8=utf8) + b" ")
        _write(part.message, out, extended, utf8)
        out.append(b" %d" % part.lines)
    elif part.is_text:
        out.append(b" %d" % part.lines)  # body-type-text: ... SP body-fld-lines
    if extended:
        # body-ext-1part = body-fld-md5 SP body-fld-dsp SP body-fld-lang SP body-fld-loc
        out.append(
            b" %s %s %s %s"
            % (
                imap_nstring(part.md5, utf8=utf8),
                _disposition(part.disposition, utf8),
                _language(part.language, utf8),
                imap_nstring(part.location, utf8=utf8),
            )
        )
    out.append(b")")


def body_structure(part: MimePart, *, extended: bool = True, utf8: bool = False) -> bytes:
    """The parenthesized BODYSTRUCTURE (*extended*) or BODY of *part* — normally the root of
    :func:`~mailserver.imap.mime.parse_message`, or any part of it (``BODYSTRUCTURE`` of a
    sub-part is what RFC 3501 nests inside its parent's).  *utf8*: UTF8=ACCEPT is enabled."""
    out: list[bytes] = []
    _write(part, out, extended, utf8)
    return b"".join(out)


def bodystructure(part: MimePart, *, utf8: bool = False) -> bytes:
    """FETCH BODYSTRUCTURE: with extension data."""
    return body_structure(part, extended=True, utf8=utf8)


def body(part: MimePart, *, utf8: bool = False) -> bytes:
    """FETCH BODY (without a section): no extension data."""
    return body_structure(part, extended=False, utf8=utf8)
