"""Strict request framing, opt-in: ``BaseHTTPRequestHandler.strict_framing``
under ``install()`` (default False: the stdlib's behaviour, unchanged).

``http.server`` serves whatever ``http.client.parse_headers`` and the email
parser make of a head. Behind a proxy that reads the same bytes another way,
the two disagree on where a request ends, and the rest of one request is
taken here as the next (request smuggling: CPython gh-150499, gh-114782;
RFC 9112 §6.3, §11.2). With ``strict_framing`` a head that allows two
readings is refused instead: a 400 whose message names the rule, the
connection closed, ``stats()["framing_rejections"]`` counted.

``framing_violation(lines)`` decides, from the raw lines as read (before any
parser joins, splits or strips them); it depends on nothing else, so that
any reader of a head can call it. The rest is how install()'s http.server
path calls it: ``checking_framing`` wraps ``parse_request``, and
``check_head`` is the hook in install()'s ``parse_headers``, which sees the
lines. Call order: handle_one_request() -> parse_request() (the wrapper) ->
the stdlib's parse_request() -> http.client.parse_headers() -> check_head()
-> framing_violation(); a refusal is raised there, before the stdlib's
parse_request reads Connection or answers ``Expect: 100-continue``, and the
wrapper sends the 400. The wrapper also ends a connection whose last body the
handler left unread (note_body_end, body_left_unread).
"""
import functools
import re
import threading

from ._core_select import core
from ._stream_io import reader_position

# RFC 9110 §5.6.2 token characters (a field name, a transfer coding).
_TOKEN = rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
# A field line nothing here objects to: name, colon, value of HTAB, SP,
# VCHAR and obs-text (RFC 9110 §5.5), CRLF. Other lines are looked at
# one rule at a time (_field_line_violation) to say which rule they break.
_PLAIN_FIELD_LINE = re.compile(_TOKEN + rb":[\t\x20-\x7e\x80-\xff]*\r\n")
_FIELD_NAME = re.compile(_TOKEN)
_FIELD_VALUE = re.compile(rb"[\t\x20-\x7e\x80-\xff]*")
_DIGITS = re.compile(rb"[0-9]+")
_HTTP_VERSION = re.compile(rb"HTTP/([0-9]+)\.([0-9]+)")
_OWS = b" \t"
# The largest Content-Length taken: a front end that keeps it in 64 bits
# must not read a larger one as another number.
_LARGEST_LENGTH = 2 ** 63 - 1


def framing_violation(lines, decodes_chunked=False):
    """The rule a request head breaks, as a short text, or None.

    ``lines``: the head as read, each line with its line end: the request
    line, the field lines, and optionally the line that ended the head (the
    blank line, or b"" for the end of the input: http.client's
    ``_read_headers`` gives it on 3.9-3.13). ``decodes_chunked``: whether the
    handler reads a chunked body itself (http.server's handlers do not).

    The rules, each RFC 9112's or RFC 9110's "MUST reject" or "MAY reject":
    every line ends with CRLF, no bare CR or LF, no NUL (§2.2); no field line
    begins with whitespace (obs-fold, §5.2; also the whitespace-preceded
    line after the request line); a field name is a token, with no
    whitespace before its colon (§5.1); a field value has no control
    character but HTAB (RFC 9110 §5.5); Content-Length at most once, its
    value digits only between optional SP/HTAB, below 2**63 (a list, even
    ``5, 5``, is refused: RFC 9110 §8.6 allows it, and
    ``int(headers["Content-Length"])`` reads neither a list nor the
    repeats); no Transfer-Encoding together with Content-Length (§6.1,
    §6.3 item 3); no Transfer-Encoding the handler cannot decode: any, unless
    ``decodes_chunked``, and then only ``chunked`` alone, on HTTP/1.1 or later
    (§6.1: an HTTP/1.0 message with one has faulty framing; §6.3 item 4: the
    final coding must be chunked; chunked only once).
    """
    if not lines:
        return None
    reason = _request_line_violation(lines[0])
    if reason is not None:
        return reason
    lengths = []
    codings = []
    for line in lines[1:]:
        if line == b"\r\n" or line == b"":  # the head's end
            break
        if not _PLAIN_FIELD_LINE.fullmatch(line):
            reason = _field_line_violation(line)
            if reason is not None:
                return reason
        name, _, value = line[:-2].partition(b":")
        name = name.lower()
        if name == b"content-length":
            lengths.append(value.strip(_OWS))
        elif name == b"transfer-encoding":
            codings.extend(coding.strip(_OWS).lower() for coding in value.split(b","))
    if codings and lengths:
        return "Transfer-Encoding with Content-Length"
    if len(lengths) > 1:
        return "Content-Length repeated"
    if lengths:
        digits = lengths[0]
        if not _DIGITS.fullmatch(digits):
            return "Content-Length not a decimal number"
        digits = digits.lstrip(b"0")
        if len(digits) > 19 or int(digits or b"0") > _LARGEST_LENGTH:
            return "Content-Length too large"
    if codings:
        return _transfer_coding_violation(lines[0], codings, decodes_chunked)
    return None


def _line_end_violation(line):
    """Which rule the line end or a CR, LF or NUL inside breaks, or None."""
    if b"\x00" in line:
        return "NUL in the head"
    if not line.endswith(b"\r\n"):
        return "line not ended by CRLF"
    if b"\r" in line[:-2]:
        return "bare CR"
    if b"\n" in line[:-2]:
        return "bare LF"
    return None


def _request_line_violation(line):
    if line == b"":
        return None  # nothing was read: no request
    return _line_end_violation(line)


def _field_line_violation(line):
    reason = _line_end_violation(line)
    if reason is not None:
        return reason
    if line.startswith((b" ", b"\t")):
        return "obs-fold (a field line beginning with whitespace)"
    name, colon, value = line[:-2].partition(b":")
    if not colon:
        return "field line without a colon"
    if name.endswith((b" ", b"\t")):
        return "whitespace between a field name and its colon"
    if not _FIELD_NAME.fullmatch(name):
        return "field name not a token"
    if not _FIELD_VALUE.fullmatch(value):
        return "control character in a field value"
    return None


def _transfer_coding_violation(request_line, codings, decodes_chunked):
    if not decodes_chunked:
        return "Transfer-Encoding (the handler does not decode one)"
    words = request_line.split()
    version = _HTTP_VERSION.fullmatch(words[-1]) if len(words) >= 3 else None
    if version is None or (int(version.group(1)), int(version.group(2))) < (1, 1):
        return "Transfer-Encoding before HTTP/1.1"
    if b"" in codings:
        return "empty element in Transfer-Encoding"
    if codings[-1] != b"chunked":
        return "final transfer coding not chunked"
    if len(codings) > 1:
        if b"chunked" in codings[:-1]:
            return "chunked applied more than once"
        return "transfer coding other than chunked"
    return None


# ---------------------------------------------------------------- install()'s http.server path

# The handler whose parse_request is running on this thread, with it whether
# its head was checked: [handler, checked], or None.
_current = threading.local()


class FramingRejected(Exception):
    """Raised by check_head through the stdlib's parse_request to the wrapper.
    Not an http.client.HTTPException: parse_request would answer that with
    its 431."""

    def __init__(self, reason):
        super().__init__(reason)
        self.reason = reason


def check_head(lines):
    """install()'s parse_headers calls this with the lines it read: under a
    strict handler's parse_request, raises FramingRejected for a head that
    breaks a rule. Elsewhere (strict off, a client's response) it does nothing."""
    checking = getattr(_current, "checking", None)
    if checking is None:
        return
    handler = checking[0]
    checking[1] = True
    reason = framing_violation([handler.raw_requestline] + list(lines),
                               getattr(handler, "decodes_chunked", False))
    if reason is not None:
        raise FramingRejected(reason)


def checking_framing(parse_request):
    """BaseHTTPRequestHandler.parse_request (``parse_request``, the stdlib's)
    that, where the handler's ``strict_framing`` is true, refuses a head that
    framing_violation() objects to. Strict off: ``parse_request`` alone."""
    def checked_parse_request(self):
        if not self.strict_framing:
            return parse_request(self)
        unread = body_left_unread(self)
        if unread:
            return end_unanswered(self, unread)
        previous = getattr(_current, "checking", None)
        checking = _current.checking = [self, False]
        try:
            parsed = parse_request(self)
        except FramingRejected as rejected:
            return refuse(self, rejected.reason)
        finally:
            _current.checking = previous
        if parsed and not checking[1]:
            # The headers were read by a parse_headers that is not
            # install()'s (replaced by someone else): unchecked, so refused.
            return refuse(self, "head not read by install()'s parse_headers")
        if parsed:
            note_body_end(self)
        return parsed

    functools.update_wrapper(checked_parse_request, parse_request)  # __wrapped__: the stdlib's
    checked_parse_request._fastsockserver_framing = True
    return checked_parse_request


# A body the handler leaves unread (a do_GET that ignores one, the CL.0 form of
# smuggling) would be read as the next request. Where the library's rfile
# reads the connection (_stream_io.reader_position), a strict handler notes
# where a request's Content-Length body ends; the next request line, if it
# began before that, is body: the connection is closed without an answer
# (an answer would be one more than the client asked for). A chunked body
# (decodes_chunked) is the handler's to end; not checked.

def note_body_end(handler):
    handler._framing_body_end = None
    headers = getattr(handler, "headers", None)
    length = None if headers is None else headers.get("Content-Length")
    if length is None:  # (else one, of digits: framing_violation)
        return
    length = int(length.strip(" \t"))
    if length:
        position = reader_position(handler.rfile)
        if position is not None:
            handler._framing_body_end = position + length


def body_left_unread(handler):
    """How many bytes of the last request's body the line just read as a
    request line began before the end of; 0 when it began at or after it."""
    end = getattr(handler, "_framing_body_end", None)
    if end is None:
        return 0
    handler._framing_body_end = None
    position = reader_position(handler.rfile)
    if position is None:
        return 0
    return max(0, end - (position - len(handler.raw_requestline)))


def end_unanswered(handler, unread):
    """The connection's end where the last request's body was left unread:
    counted as a refusal, a log_error line, closed with nothing sent."""
    state = getattr(getattr(handler, "server", None), "_serving_state", None)
    if state is not None:
        core.framing_rejected(state)
    handler.log_error("Request body left unread (%d bytes): connection closed", unread)
    handler.close_connection = True
    return False


def refuse(handler, reason):
    """The refusal of a head framing_violation() gave ``reason`` for: counted,
    a 400 in the stdlib's shape of one (send_error, so its log_error line),
    the connection closed after it; returns parse_request's False. (Another
    reader of the head, a faster request path, refuses with this too.)"""
    state = getattr(getattr(handler, "server", None), "_serving_state", None)
    if state is not None:
        core.framing_rejected(state)
    handler.send_error(400, "Bad request framing (%s)" % reason)
    handler.close_connection = True  # whatever an override of send_error did
    return False
