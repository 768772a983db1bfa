"""http.server's per-request work under install(): the request line and head
read and parsed, the response head built, with the stdlib's results.

One source, two builds (as aiohttp's reader_py/reader_c): this file is the
pure-Python module and is also compiled by Cython, unchanged, as
``fastsockserver._http`` (setup.py copies it to build/http/_http.py for
that); ``_http_select`` picks one. ``_http_patches`` puts the methods made here on
``BaseHTTPRequestHandler`` where that class's own are the stdlib forms this
module knows (those of 3.9-3.13).

The fallback rule. Each method here is the stdlib's, with the calls it makes
to other handler methods done in place where the method called is the
stdlib's own (``_own``: neither overridden in a subclass nor set on the
instance); an overridden one is called as the stdlib calls it. A subclass
that overrides a method replaced here never reaches this code for it.
Inputs the fast path does not know (a request line that is not
``METHOD PATH HTTP/1.0|1.1``, a header block that is not plain, another
``MessageClass``, a replaced ``http.client.parse_headers``) go to the
stdlib's own code before anything is consumed or set.
"""
import functools
import re
import time

# ---------------------------------------------------------------- header blocks

# Whether this source runs compiled (as fastsockserver._http): Cython reads
# ``import cython`` itself; run as Python, the module may be absent.
try:
    import cython
    COMPILED = cython.compiled
except ImportError:
    COMPILED = False

# A block the feed parser reads as nothing but headers: "Name: value" lines,
# where the name has only the characters the parser's headerRE allows in one
# and the value only printable ASCII and tabs (no line break str.splitlines
# knows, no leading space or tab, so no continuation line), each ended by
# "\n" or "\r\n"; then the blank line, or the end of the input.
_PLAIN_BLOCK = re.compile(rb"(?:[\x21-\x39\x3b-\x7e]+:[\t\x20-\x7e]*\r?\n)*(?:\r?\n)?")
_plain_block = _PLAIN_BLOCK.fullmatch
# The (name, value) pairs of a plain block (decoded: it is ASCII) as
# header_source_parse splits each line: the name as is, the value without
# its leading blanks and line end. The blank line has no name: no pair.
_HEADER_PAIRS = re.compile(r"([\x21-\x39\x3b-\x7e]+):[ \t]*([\t\x20-\x7e]*)\r?\n")
_header_pairs = _HEADER_PAIRS.findall


def pairs_by_regex(lines):
    """The (name, value) pairs of ``lines`` (a header block, as read) where
    they make a plain block, else None."""
    block = b"".join(lines)
    if _plain_block(block) is None:
        return None
    return _header_pairs(block.decode("ascii"))


def pairs_by_scan(lines):
    """pairs_by_regex(lines), found by one pass over each line's bytes: what
    the compiled build runs (typed in _http.pxd, a loop over C chars; as
    Python the regular expressions are faster). None also where a line is
    split over two items, or is not exact bytes: readline gives neither,
    and the email parser gives those the same message."""
    pairs = []
    ended = False  # the blank line was seen: only empty items may follow
    for item in lines:
        if type(item) is not bytes:
            return None
        line = item
        size = len(line)
        if size == 0:
            continue
        if ended or line[size - 1] != 0x0a:  # "\n"
            return None
        end = size - 1
        if end > 0 and line[end - 1] == 0x0d:  # "\r"
            end -= 1
        if end == 0:
            ended = True
            continue
        colon = 0
        while colon < end:
            char = line[colon]
            if char == 0x3a:  # ":"
                break
            if char < 0x21 or char > 0x7e:
                return None
            colon += 1
        if colon == 0 or colon == end:  # no name, or no colon
            return None
        start = colon + 1
        while start < end and (line[start] == 0x20 or line[start] == 0x09):
            start += 1
        index = start
        while index < end:
            char = line[index]
            if (char < 0x20 and char != 0x09) or char > 0x7e:
                return None
            index += 1
        pairs.append((line[:colon].decode("ascii"), line[start:end].decode("ascii")))
    return pairs

# id(http.client module) -> (its HTTPMessage, the vars() of a new one): what
# the email parser's message holds before the headers go in.
_MESSAGE_TEMPLATES = {}


def _message_template(module):
    message_class = module.HTTPMessage
    known = _MESSAGE_TEMPLATES.get(id(module))
    if known is not None and known[0] is message_class:
        return known[1]
    template = dict(vars(message_class(policy=module.email.parser.compat32)))
    _MESSAGE_TEMPLATES[id(module)] = (message_class, template)
    return template


def plain_message(module, lines):
    """The HTTPMessage the email parser makes of ``lines``, or None when the
    block is not a plain one (see _PLAIN_BLOCK)."""
    found = plain_message_and_values(module, lines)
    return None if found is None else found[0]


def plain_message_and_values(module, lines):
    """plain_message(module, lines), and what its get("Connection", "") and
    get("Expect", "") return (HTTPMessage.get of the compat32 policy gives
    the first value of that name as it is: plain values are ASCII), or None."""
    headers = pairs_by_scan(lines) if COMPILED else pairs_by_regex(lines)
    if headers is None:
        return None
    # What email.parser.Parser(_class=HTTPMessage) gives: the message made
    # with the compat32 policy, each header as header_source_parse splits it,
    # payload "". Made from a new message's attributes without its __init__
    # (a Python call); its lists are the only mutable ones, each made anew.
    connection = expect = None
    for name, value in headers:
        size = len(name)
        if size == 10:
            if connection is None and name.lower() == "connection":
                connection = value
        elif size == 6:
            if expect is None and name.lower() == "expect":
                expect = value
        elif size == 12 and name.lower() == "content-type":
            kind = value.lower()
            if "multipart" in kind or "message" in kind:
                # The feed parser looks for parts in a multipart/* or
                # message/* body and reports defects when there are none.
                return None
    state = dict(_message_template(module))
    state["_headers"] = headers
    state["_payload"] = ""
    state["defects"] = []
    message_class = module.HTTPMessage
    message = message_class.__new__(message_class)
    message.__dict__ = state
    return (message, "" if connection is None else connection,
            "" if expect is None else expect)


def read_header_lines(module, fp):
    """http.client._read_headers of 3.9-3.13, with its limits and errors."""
    # The limits read where that function reads them, each line; from its
    # namespace, where they are its globals (it raises NameError, after one
    # line, where one is missing: then it runs).
    names = vars(module)
    if "_MAXLINE" not in names or "_MAXHEADERS" not in names:
        return module._read_headers(fp)
    readline = fp.readline
    lines = []
    while True:
        line = readline(names["_MAXLINE"] + 1)
        if len(line) > names["_MAXLINE"]:
            raise module.LineTooLong("header line")
        lines.append(line)
        if len(lines) > names["_MAXHEADERS"]:
            raise module.HTTPException("got more than %d headers" % names["_MAXHEADERS"])
        if line == b"\r\n" or line == b"\n" or line == b"":
            return lines


# parse_headers functions of _http_patches -> PlainParser: the ones
# parse_request may stand in for. Only the 3.9-3.13 form is registered.
PLAIN_PARSERS = {}


class PlainParser:
    """What parse_request needs to know of one http.client module's fast
    parse_headers (_http_patches) to do its work in place."""

    def __init__(self, module, parse_lines, head_read, head_reader_type, check_head):
        self.module = module
        # parse_lines(fp, lines, _class): the message for the lines read
        self.parse_lines = parse_lines
        self.head_read = head_read  # parse_lines' first step
        self.head_reader_type = head_reader_type  # of an rfile.raw head_read acts on
        self.check_head = check_head  # its second: strict_framing's check (_framing)
        # What parse_headers calls that parse_request does in place, and
        # the email code plain_message_and_values knows the result of.
        self.read_headers = module._read_headers
        self.parse_header_lines = vars(module).get("_parse_header_lines")
        self.message_get = module.HTTPMessage.get


# ---------------------------------------------------------------- dates

# email.utils.formatdate rounds the time to whole microseconds before it drops
# them: within a microsecond of a second's end its text is the next second's.
_MARGIN = 1e-6


class _Kept:
    """A text kept (kept_for_the_second's, a response line's), with what it
    holds for, as one attribute."""


_NOTHING = object()  # what no value is: a _Kept's key before the first


def kept_for_the_second(original, text_at, still_valid, reads):
    """``original``, a handler method that formats the current time, with its
    text kept for the rest of that second.

    ``text_at(self, now)`` is ``(text, detail)``: ``original``'s text for the
    clock reading ``now``, and what else it depends on; the text is kept
    while ``still_valid(self, detail)`` and time.tzset() has not been called
    (it makes a new time.tzname). The clock is read once per call, as
    ``original`` does, so a test's scripted clock sees the same reads.
    ``reads``: (namespace, name) pairs, what ``original`` looks up that
    ``text_at`` stands in for (its module's ``time``, say). While one is
    another object than now (a test's mock.patch), and for a call with a
    timestamp argument, the call is ``original``'s.
    """
    reads = tuple((namespace, name, namespace.get(name)) for namespace, name in reads)
    check = None if still_valid is always_valid else still_valid
    # kept.now: (low, high, zone, text, detail), the text holds for low <=
    # clock < high (its second, less _MARGIN at each end); replaced as one
    # object. An attribute in an instance's dict, not a closure variable:
    # compiled, a closure variable is a bare field that one thread may read
    # while another replaces (and frees) it with the GIL off (ThreadSanitizer
    # saw it); the dict's reads and writes are safe there.
    kept = _Kept()
    kept.now = (1.0, 0.0, None, None, None)

    def method(self, *args, **kwargs):
        if args or kwargs:
            return original(self, *args, **kwargs)
        for namespace, name, value in reads:
            if namespace.get(name) is not value:
                return original(self)
        now = time.time()
        if type(now) is not float:  # time.time replaced (by a test double, say)
            return text_at(self, now)[0]
        low, high, zone, text, detail = kept.now
        if (low <= now < high and zone is time.tzname
                and (check is None or check(self, detail))):
            return text
        zone = time.tzname  # before the text: a tzset() meanwhile is seen next time
        text, detail = text_at(self, now)
        second = now - now % 1.0
        if second + _MARGIN <= now < second + 1.0 - _MARGIN:
            kept.now = (second + _MARGIN, second + 1.0 - _MARGIN, zone, text, detail)
        return text

    functools.update_wrapper(method, original)  # __wrapped__: the stdlib's
    return method


# What kept_for_the_second is given for http.server's two date methods (see
# _http_patches.patch_http_server).

def always_valid(handler, detail):
    return True


LOG_TIME_FORMAT = "%02d/%3s/%04d %02d:%02d:%02d"


def log_date_time_at(handler, now):
    # BaseHTTPRequestHandler.log_date_time_string (the same in 3.9-3.13) for
    # the clock reading ``now``: the stdlib's reads the clock itself. The
    # detail: the month and its name's text (monthname is the handler's own,
    # a subclass may change it, even in place).
    year, month, day, hh, mm, ss, x, y, z = time.localtime(now)
    name = str(handler.monthname[month])
    return LOG_TIME_FORMAT % (day, name, year, hh, mm, ss), (month, name)


def same_month_name(handler, detail):
    month, name = detail
    return str(handler.monthname[month]) == name


# ---------------------------------------------------------------- the handler's methods

def is_own(own, handler, name):
    """Whether the method ``name`` the stdlib would call on ``handler`` is the
    one it is here, ``own[name]``: neither overridden in a subclass nor set
    on the instance. (``own`` is not changed once its methods are made: its
    reads need no lock with the GIL off.)"""
    return (getattr(type(handler), name, None) is own[name]
            and name not in handler.__dict__)


# Status lines already made: (protocol_version, code, message) -> bytes.
_STATUS_LINES = {}
_STATUS_LINES_KEPT = 512


def handler_methods(module, originals, close_if_draining, checking_framing):
    """The fast methods for http.server ``module``'s BaseHTTPRequestHandler,
    as a dict name -> function. ``originals``: the stdlib's methods (name ->
    function) this module calls or does in place, and its class's
    ``_control_char_table``; ``close_if_draining(handler)``: end_headers' first step (see
    _http_patches._closing_while_draining); ``checking_framing(parse_request)``:
    the parse_request that honours ``strict_framing`` (_framing), made here of
    the fast one, so that handle_one_request calls the fast one itself where
    strict_framing is off (as that wrapper would)."""
    g = vars(module)
    own = dict(originals)
    control_char_table = own.pop("_control_char_table")

    stdlib_parse_request = originals["parse_request"]

    def parse_request(self):
        raw = self.raw_requestline
        if type(raw) is not bytes:
            return stdlib_parse_request(self)
        requestline = raw.decode("latin-1").rstrip("\r\n")
        words = requestline.split()
        if len(words) != 3:
            return stdlib_parse_request(self)
        command, path, version = words
        protocol_version = self.protocol_version
        if type(protocol_version) is not str or (version != "HTTP/1.1" and version != "HTTP/1.0"):
            return stdlib_parse_request(self)
        self.command = None
        self.request_version = version
        self.requestline = requestline
        self.close_connection = not (version == "HTTP/1.1" and protocol_version >= "HTTP/1.1")
        if path.startswith("//"):
            path = "/" + path.lstrip("/")  # as the stdlib: reduced to a single /
        self.command, self.path = command, path

        client = g["http"].client
        rfile = self.rfile
        parse_headers = client.parse_headers
        plain = PLAIN_PARSERS.get(parse_headers)
        message_class = self.MessageClass
        found = None
        try:
            if (plain is None or plain.module is not client
                    or client._read_headers is not plain.read_headers):
                headers = parse_headers(rfile, _class=message_class)
            else:
                lines = read_header_lines(client, rfile)
                client_names = vars(client)
                if (message_class is client_names["HTTPMessage"]
                        and client_names.get("_parse_header_lines") is plain.parse_header_lines
                        and message_class.get is plain.message_get):
                    # parse_lines' work: head_read's, check_head, then the
                    # plain message
                    raw = getattr(rfile, "raw", None)
                    if type(raw) is plain.head_reader_type:
                        raw._head_deadline = 0.0
                    if self.strict_framing:
                        # (check_head acts only under _framing's wrapper of
                        # a strict handler; a no-op costs a failed
                        # thread-local lookup)
                        plain.check_head(lines)
                    found = plain_message_and_values(client, lines)
                    if found is None:
                        headers = plain.parse_lines(rfile, lines, message_class)
                    else:
                        headers = found[0]
                else:
                    headers = plain.parse_lines(rfile, lines, message_class)
        except client.LineTooLong as err:
            self.send_error(g["HTTPStatus"].REQUEST_HEADER_FIELDS_TOO_LARGE,
                            "Line too long", str(err))
            return False
        except client.HTTPException as err:
            self.send_error(g["HTTPStatus"].REQUEST_HEADER_FIELDS_TOO_LARGE,
                            "Too many headers", str(err))
            return False
        self.headers = headers

        if found is None:
            conntype = headers.get("Connection", "")
        else:
            conntype = found[1]
        if conntype.lower() == "close":
            self.close_connection = True
        elif conntype.lower() == "keep-alive" and self.protocol_version >= "HTTP/1.1":
            self.close_connection = False
        expect = headers.get("Expect", "") if found is None else found[2]
        if (expect.lower() == "100-continue" and self.protocol_version >= "HTTP/1.1"
                and self.request_version >= "HTTP/1.1"):
            if not self.handle_expect_100():
                return False
        return True

    def handle_one_request(self):
        try:
            self.raw_requestline = self.rfile.readline(65537)
            if len(self.raw_requestline) > 65536:
                self.requestline = ''
                self.request_version = ''
                self.command = ''
                self.send_error(g["HTTPStatus"].REQUEST_URI_TOO_LONG)
                return
            if not self.raw_requestline:
                self.close_connection = True
                return
            if is_own(own, self, "parse_request"):
                if not (checked_parse_request(self) if self.strict_framing
                        else parse_request(self)):
                    return
            elif not self.parse_request():
                return
            mname = 'do_' + self.command
            if not hasattr(self, mname):
                self.send_error(
                    g["HTTPStatus"].NOT_IMPLEMENTED,
                    "Unsupported method (%r)" % self.command)
                return
            method = getattr(self, mname)
            method()
            self.wfile.flush()  # actually send the response if not already done.
        except g["socket"].timeout as e:  # TimeoutError from 3.10 on
            self.log_error("Request timed out: %r", e)
            self.close_connection = True
            return

    def log_message(self, format, *args):
        # Where address_string is the stdlib's, its text in place; the
        # translation of control characters only where there is one to make.
        # The same steps in the same order as the stdlib's.
        message = format % args
        stderr = g["sys"].stderr
        if is_own(own, self, "address_string"):
            address = self.client_address[0]
        else:
            address = self.address_string()
        when = self.log_date_time_string()
        table = self._control_char_table
        if table is not control_char_table or not message.isprintable() or "\\" in message:
            message = message.translate(table)
        stderr.write("%s - - [%s] %s\n" % (address, when, message))

    def log_request(self, code='-', size='-'):
        if isinstance(code, g["HTTPStatus"]):
            code = code.value
        if is_own(own, self, "log_message"):
            log_message(self, '"%s" %s %s', self.requestline, str(code), str(size))
        else:
            self.log_message('"%s" %s %s', self.requestline, str(code), str(size))

    def send_response_only(self, code, message=None):
        if self.request_version != 'HTTP/0.9':
            if message is None:
                if code in self.responses:
                    message = self.responses[code][0]
                else:
                    message = ''
            try:
                buffer = self._headers_buffer
            except AttributeError:
                buffer = self._headers_buffer = []
            protocol_version = self.protocol_version
            key = (protocol_version, code, message)
            # Kept only for the types whose text equal keys make the same.
            keep = (type(protocol_version) is str and type(message) is str
                    and (type(code) is int or type(code) is g["HTTPStatus"]))
            line = _STATUS_LINES.get(key) if keep else None
            if line is None:
                line = ("%s %d %s\r\n" % key).encode('latin-1', 'strict')
                if keep:
                    if len(_STATUS_LINES) >= _STATUS_LINES_KEPT:
                        _STATUS_LINES.clear()
                    _STATUS_LINES[key] = line
            buffer.append(line)

    def buffer_header(self, keyword, value):
        # send_header's first part: the line into the head's buffer
        if self.request_version != 'HTTP/0.9':
            headers_buffer(self).append(
                ("%s: %s\r\n" % (keyword, value)).encode('latin-1', 'strict'))

    def headers_buffer(self):
        # the head's buffer, made where there is none (before the line that
        # goes into it is made, as the stdlib's: a line that fails to encode
        # leaves the buffer)
        try:
            return self._headers_buffer
        except AttributeError:
            buffer = self._headers_buffer = []
            return buffer

    def send_header(self, keyword, value):
        buffer_header(self, keyword, value)
        if keyword.lower() == 'connection':
            if value.lower() == 'close':
                self.close_connection = True
            elif value.lower() == 'keep-alive':
                self.close_connection = False

    # send_response's Server and Date lines as last made: (the value, its
    # line), for a value that is an exact str (equal ones make the same
    # line); the same object is the value again until the server's version
    # changes (the text of version_string, kept in kept_version) or the
    # second ends (date_time_string's). Each replaced as one object, in an
    # instance's dict (see kept_for_the_second).
    kept_server = _Kept()
    kept_date = _Kept()
    kept_version = _Kept()
    kept_server.now = kept_date.now = (_NOTHING, None)
    kept_version.now = (_NOTHING, _NOTHING, None)  # (server_version, sys_version, text)

    def _header(self, keyword, value, kept_line):
        # send_header(keyword, value) for send_response's Server and Date;
        # kept_line: kept_server or kept_date.
        if is_own(own, self, "send_header"):
            if self.request_version != 'HTTP/0.9':
                buffer = headers_buffer(self)
                kept, line = kept_line.now
                if kept is not value:
                    line = ("%s: %s\r\n" % (keyword, value)).encode('latin-1', 'strict')
                    if type(value) is str:
                        kept_line.now = (value, line)
                buffer.append(line)
        else:
            self.send_header(keyword, value)

    def send_response(self, code, message=None):
        if is_own(own, self, "log_request"):
            log_request(self, code)
        else:
            self.log_request(code)
        if is_own(own, self, "send_response_only"):
            send_response_only(self, code, message)
        else:
            self.send_response_only(code, message)
        if is_own(own, self, "version_string"):
            server_version = self.server_version
            if type(server_version) is str:
                # (its + ' ' has no effect to come before the next read)
                sys_version = self.sys_version
                server, system, text = kept_version.now
                if server is not server_version or system is not sys_version:
                    text = server_version + ' ' + sys_version
                    if type(sys_version) is str:
                        kept_version.now = (server_version, sys_version, text)
            else:
                text = server_version + ' ' + self.sys_version
            _header(self, 'Server', text, kept_server)
        else:
            _header(self, 'Server', self.version_string(), kept_server)
        _header(self, 'Date', self.date_time_string(), kept_date)

    def end_headers(self):
        close_if_draining(self)
        if self.request_version != 'HTTP/0.9':
            self._headers_buffer.append(b"\r\n")
            if is_own(own, self, "flush_headers"):
                if hasattr(self, '_headers_buffer'):
                    self.wfile.write(b"".join(self._headers_buffer))
                    self._headers_buffer = []
            else:
                self.flush_headers()

    checked_parse_request = checking_framing(parse_request)
    methods = {
        "parse_request": checked_parse_request,
        "handle_one_request": handle_one_request,
        "log_message": log_message,
        "log_request": log_request,
        "send_response_only": send_response_only,
        "send_header": send_header,
        "send_response": send_response,
        "end_headers": end_headers,
    }
    # Each method stands where the stdlib's was: is_own compares with these.
    own.update(methods)
    return methods


# ---------------------------------------------------------------- wsgiref

def wsgi_handler_methods(module, originals):
    """``write`` and ``send_headers`` for wsgiref.handlers ``module``'s
    BaseHandler: the stdlib's, with the response head (status line, Date,
    Server, the headers) and the first body chunk handed to ``_write`` once,
    where the stdlib hands each piece to it (each a system call on a socket:
    SimpleHandler's _write is stdout.write). Done so only where send_headers,
    send_preamble and _write are the stdlib's own; otherwise each is called as
    the stdlib calls it. ``originals``: name -> the stdlib's function, for
    write, send_headers, send_preamble and _write (SimpleHandler's)."""
    g = vars(module)
    own = dict(originals)
    stdlib_send_headers = originals["send_headers"]

    def head(self, data):
        # send_headers' work with the pieces it would write joined, then
        # ``data``; None where an overridden send_preamble or _write must be
        # called as the stdlib calls them (then nothing is done here).
        if not (is_own(own, self, "send_preamble") and is_own(own, self, "_write")):
            return None
        self.cleanup_headers()
        self.headers_sent = True
        parts = []
        if not self.origin_server or self.client_is_modern():
            try:
                # send_preamble's pieces
                if self.origin_server:
                    if self.client_is_modern():
                        parts.append(('HTTP/%s %s\r\n' % (self.http_version, self.status))
                                     .encode('iso-8859-1'))
                        if 'Date' not in self.headers:
                            parts.append(('Date: %s\r\n' % g["format_date_time"](
                                g["time"].time())).encode('iso-8859-1'))
                        if self.server_software and 'Server' not in self.headers:
                            parts.append(('Server: %s\r\n' % self.server_software)
                                         .encode('iso-8859-1'))
                else:
                    parts.append(('Status: %s\r\n' % self.status).encode('iso-8859-1'))
                parts.append(bytes(self.headers))
            except BaseException:
                if parts:  # what the stdlib had written before the error
                    self._write(b"".join(parts))
                raise
        parts.append(data)
        return b"".join(parts)

    def send_headers(self):
        whole = head(self, b"")
        if whole is None:
            return stdlib_send_headers(self)
        self._write(whole)

    def write(self, data):
        assert type(data) is bytes, \
            "write() argument must be a bytes instance"
        if not self.status:
            raise AssertionError("write() before start_response()")
        elif not self.headers_sent:
            # Before the first output, send the stored headers
            self.bytes_sent = len(data)    # make sure we know content-length
            if is_own(own, self, "send_headers"):
                whole = head(self, data)
                if whole is not None:
                    self._write(whole)
                    self._flush()
                    return
            self.send_headers()
        else:
            self.bytes_sent += len(data)
        self._write(data)
        self._flush()

    methods = {"send_headers": send_headers, "write": write}
    own.update(methods)
    return methods


def wsgi_get_environ(module, original, message_class, compat32, remote_host):
    """WSGIRequestHandler.get_environ for wsgiref.simple_server ``module``: the
    stdlib's (``original``; ``remote_host``: its form sets REMOTE_HOST from
    address_string(), as up to 3.12), with the headers read in one pass over the
    message's own list. The stdlib's get() and items() each go through every
    header, lowering and sanitising it, three passes per request. Done so where
    items() would give that list as it is: ``headers`` an exact
    ``message_class`` (http.client's HTTPMessage) with the ``compat32`` policy,
    every value an ASCII str (compat32's header_fetch_parse returns those
    unchanged); otherwise, or before anything is set, the stdlib's."""
    g = vars(module)

    def get_environ(self):
        headers = self.headers
        if type(headers) is not message_class or headers.policy is not compat32:
            return original(self)
        pairs = headers._headers
        content_type = length = None
        for name, value in pairs:
            if type(value) is not str or not value.isascii():
                return original(self)
            if content_type is None or length is None:
                lowered = name.lower()
                if content_type is None and lowered == 'content-type':
                    content_type = value
                elif length is None and lowered == 'content-length':
                    length = value
        env = self.server.base_environ.copy()
        env['SERVER_PROTOCOL'] = self.request_version
        env['SERVER_SOFTWARE'] = self.server_version
        env['REQUEST_METHOD'] = self.command
        if '?' in self.path:
            path, query = self.path.split('?', 1)
        else:
            path, query = self.path, ''
        env['PATH_INFO'] = g["urllib"].parse.unquote(path, 'iso-8859-1')
        env['QUERY_STRING'] = query
        if remote_host:
            host = self.address_string()
            if host != self.client_address[0]:
                env['REMOTE_HOST'] = host
        env['REMOTE_ADDR'] = self.client_address[0]
        if content_type is None:
            # get_content_type() of a message without the header
            env['CONTENT_TYPE'] = headers.get_default_type()
        else:
            env['CONTENT_TYPE'] = content_type
        if length:
            env['CONTENT_LENGTH'] = length
        for name, value in pairs:
            key = name.replace('-', '_').upper()
            value = value.strip()
            if key in env:
                continue  # skip content length, type, etc.
            key = 'HTTP_' + key
            if key in env:
                env[key] += ',' + value  # comma-separate multiple headers
            else:
                env[key] = value
        return env

    return get_environ
