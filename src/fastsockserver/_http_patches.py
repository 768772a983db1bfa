"""``install()``'s second part: ``http.client.parse_headers`` without the email
parser for plain header blocks, and ``http.server``'s date texts made once a
second.

``http.server`` (and ``xmlrpc.server`` and ``wsgiref``, built on it) parses the
headers of every request with ``http.client.parse_headers``, which runs the
``email`` package's feed parser: ~25 us a request here, a third of
``http.server``'s own time for a small GET. Nearly every header block is a few
``Name: value`` lines, and for those the feed parser's result is known: an
``HTTPMessage`` holding the ``(name, value)`` pairs and an empty payload.
``parse_headers`` below builds that message directly and hands every other
block to the email parser, as ``http.client`` does. The lines are read by
``http.client``'s own ``_read_headers``, so its limits and errors are the same.

Each response also formats the current time twice: the Date header
(``date_time_string``, ~3 us) and the log line (``log_date_time_string``,
~1.5 us). Both texts change once a second, so the handler's methods keep the
last one (see _kept_for_the_second).

``BaseHTTPRequestHandler.strict_framing`` (opt-in) is _framing's: its
parse_request wrapper is put in place here, and parse_headers hands it the
lines it read.
"""
import functools
import re
import sys
import time

from ._framing import check_head, checking_framing
from ._stream_io import head_read

# A block the feed parser reads as nothing but headers: "Name: value" lines,
# where the name has only the characters the parser's headerRE allows in one
# and the value only printable ASCII and tabs (no line break str.splitlines
# knows, no leading space or tab, so no continuation line), each ended by
# "\n" or "\r\n"; then the blank line, or the end of the input.
_PLAIN_BLOCK = re.compile(rb"(?:[\x21-\x39\x3b-\x7e]+:[\t\x20-\x7e]*\r?\n)*(?:\r?\n)?")
# The feed parser looks for parts in a multipart/* or message/* body and
# reports defects when there are none: such blocks go to it.
_PARTS_TYPE = re.compile(rb"^content-type:[^\n]*(?:multipart|message)",
                         re.IGNORECASE | re.MULTILINE)


def _plain_message(module, lines):
    """The HTTPMessage the email parser makes of ``lines``, or None when the
    block is not a plain one (see _PLAIN_BLOCK)."""
    block = b"".join(lines)
    if not _PLAIN_BLOCK.fullmatch(block) or _PARTS_TYPE.search(block):
        return None
    # What email.parser.Parser(_class=HTTPMessage) gives: the message made
    # with the compat32 policy, each header as header_source_parse splits it
    # (name as is; value without leading blanks and the line end), payload "".
    message = module.HTTPMessage(policy=module.email.parser.compat32)
    headers = message._headers
    for line in lines:
        name, colon, value = line.partition(b":")
        if not colon:  # the blank line, or b"" at the end of the input
            break
        headers.append((name.decode("ascii"),
                        value.lstrip(b" \t").rstrip(b"\r\n").decode("ascii")))
    message._payload = ""
    return message


def _make_parse_headers(module):
    """A parse_headers for the http.client ``module``, same signature: that of
    3.9-3.13, or the later one whose header count limit is a keyword argument
    (``_max_headers``, passed on to ``_read_headers``; seen in CPython's
    development branch for 3.15, where the lines no longer end with the
    blank one)."""
    original = module.parse_headers
    stdlib_parse_lines = getattr(module, "_parse_header_lines", None)  # 3.12+

    def parse_lines(fp, lines, _class):
        head_read(fp)  # a server's rfile: its headers_timeout ends here
        check_head(lines)  # a strict_framing handler's head: refused here (_framing)
        parse_lines = getattr(module, "_parse_header_lines", None)
        # (A _parse_header_lines replaced by someone else gets every block.)
        if _class is module.HTTPMessage and parse_lines is stdlib_parse_lines:
            message = _plain_message(module, lines)
            if message is not None:
                return message
        if parse_lines is not None:
            return parse_lines(lines, _class)
        # What http.client 3.9-3.11 does with the lines.
        return module.email.parser.Parser(_class=_class).parsestr(
            b"".join(lines).decode("iso-8859-1"))

    def parse_headers(fp, _class=module.HTTPMessage):
        return parse_lines(fp, module._read_headers(fp), _class)

    def parse_headers_with_limit(fp, _class=module.HTTPMessage, *, _max_headers=None):
        return parse_lines(fp, module._read_headers(fp, _max_headers), _class)

    if _reads_with_a_limit(module._read_headers):
        parse_headers = parse_headers_with_limit
    functools.update_wrapper(parse_headers, original)  # __wrapped__ and the name: the stdlib's
    return parse_headers


def _reads_with_a_limit(read_headers):
    """Whether http.client's ``_read_headers`` takes the header count limit."""
    code = getattr(read_headers, "__code__", None)
    return code is not None and code.co_varnames[:code.co_argcount] == ("fp", "max_headers")


def _own_function(function, module, parameters, names, constants=(), keyword_only=()):
    """Whether ``function`` is the ``module``'s own as of Python 3.9-3.13 (or a
    later form this module knows), the one a replacement here stands in for:
    not one replaced or wrapped by someone else, not a later version's that
    does something else. Known by its parameters (``keyword_only`` ones
    apart), the global and attribute names its code uses (``names``: the
    tuples seen) and ``constants`` it has."""
    code = getattr(function, "__code__", None)
    return (code is not None
            and not hasattr(function, "__wrapped__")
            and getattr(function, "__module__", None) == module.__name__
            and code.co_varnames[:code.co_argcount] == parameters
            and code.co_varnames[code.co_argcount:code.co_argcount
                                 + code.co_kwonlyargcount] == keyword_only
            and code.co_names in names
            and all(constant in code.co_consts for constant in constants))


# The forms of http.client's parse_headers and _read_headers the fast
# parse_headers stands in for, as (parse_headers' keyword-only parameters,
# _read_headers' parameters, the names each uses): those of 3.9-3.13, and the
# later one of CPython's development branch for 3.15, where the header count
# limit is an argument (two spellings of its _read_headers seen).
_PARSE_HEADERS_FORMS = (
    ((), ("fp",),
     (("_read_headers", "join", "decode", "email", "parser", "Parser", "parsestr"),
      ("_read_headers", "_parse_header_lines")),  # 3.12+
     (("readline", "_MAXLINE", "len", "LineTooLong", "append", "_MAXHEADERS",
       "HTTPException"),)),
    (("_max_headers",), ("fp", "max_headers"),
     (("_read_headers", "_parse_header_lines"),),
     (("_MAXHEADERS", "readline", "_MAXLINE", "len", "LineTooLong", "append",
       "HTTPException"),
      ("readline", "_MAXLINE", "len", "LineTooLong", "append", "HTTPException"))),
)


def patch_http_client(module):
    """Give the http.client ``module`` the fast parse_headers, where it can."""
    read_headers = getattr(module, "_read_headers", None)
    for keyword_only, read_parameters, parse_names, read_names in _PARSE_HEADERS_FORMS:
        if (_own_function(module.parse_headers, module, ("fp", "_class"), parse_names,
                          keyword_only=keyword_only)
                and _own_function(read_headers, module, read_parameters, read_names)):
            module.parse_headers = _make_parse_headers(module)
            return


# ---------------------------------------------------------------- http.server's dates

# email.utils.formatdate rounds the time to whole microseconds before it drops
# them: within a microsecond of a second's end its text is the next second's.
_MARGIN = 1e-6


def _kept_for_the_second(original, text_at, still_valid, reads):
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
    kept = (None, None, None, None)  # (second, zone, text, detail), replaced as one object

    def method(self, *args, **kwargs):
        nonlocal kept
        if args or kwargs:
            return original(self, *args, **kwargs)
        for namespace, name, value in reads:
            if namespace.get(name) is not value:
                return original(self)
        now = time.time()
        if type(now) is not float:  # time.time replaced (by a test double, say)
            return text_at(self, now)[0]
        second, zone, text, detail = kept
        if (second is not None and second + _MARGIN <= now < second + 1.0 - _MARGIN
                and zone is time.tzname and still_valid(self, detail)):
            return text
        zone = time.tzname  # before the text: a tzset() meanwhile is seen next time
        text, detail = text_at(self, now)
        second = now - now % 1.0
        if second + _MARGIN <= now < second + 1.0 - _MARGIN:
            kept = (second, zone, text, detail)
        return text

    functools.update_wrapper(method, original)  # __wrapped__: the stdlib's
    return method


def _always_valid(handler, detail):
    return True


_LOG_TIME_FORMAT = "%02d/%3s/%04d %02d:%02d:%02d"


def _log_date_time_at(handler, now):
    # BaseHTTPRequestHandler.log_date_time_string (the same in 3.9-3.13) for
    # the clock reading ``now``: the stdlib's reads the clock itself. The
    # detail: the month and its name's text (monthname is the handler's own,
    # a subclass may change it, even in place).
    year, month, day, hh, mm, ss, x, y, z = time.localtime(now)
    name = str(handler.monthname[month])
    return _LOG_TIME_FORMAT % (day, name, year, hh, mm, ss), (month, name)


def _same_month_name(handler, detail):
    month, name = detail
    return str(handler.monthname[month]) == name


# ---------------------------------------------------------------- http.server in a drain

def _closing_while_draining(original):
    """BaseHTTPRequestHandler.end_headers, adding ``Connection: close`` to a
    response while its server drains: the client then opens its next
    request's connection elsewhere (or later) instead of sending it on this
    one as drain() ends it. ``original`` runs in any case."""
    def end_headers(self):
        state = getattr(getattr(self, "server", None), "_serving_state", None)
        if state is not None and state.draining:
            _say_close(self)
        return original(self)

    functools.update_wrapper(end_headers, original)  # __wrapped__: the stdlib's
    end_headers._fastsockserver_drain = True
    return end_headers


def _say_close(handler):
    lines = getattr(handler, "_headers_buffer", None)
    if not lines or getattr(handler, "request_version", None) == "HTTP/0.9":
        return
    status = lines[0].split(b" ", 2)
    if len(status) < 2 or status[1][:1] == b"1":
        return  # an interim response (100 Continue): the final one will say it
    for line in lines[1:]:
        if line[:11].lower() == b"connection:":
            return  # the handler's own choice stands
    lines.append(b"Connection: close\r\n")
    handler.close_connection = True


def patch_http_server(module):
    """Give the http.server ``module``'s BaseHTTPRequestHandler date methods
    that keep their text for the second, where they are the stdlib's own, an
    end_headers that says ``Connection: close`` while the server drains, and
    ``strict_framing`` (default False) with the parse_request that honours it
    (_framing)."""
    handler_class = getattr(module, "BaseHTTPRequestHandler", None)
    methods = getattr(handler_class, "__dict__", {})
    parse_request = methods.get("parse_request")
    if callable(parse_request) and not hasattr(parse_request, "_fastsockserver_framing"):
        handler_class.parse_request = checking_framing(parse_request)
        handler_class.strict_framing = False
        handler_class.decodes_chunked = False
    end_headers = methods.get("end_headers")
    if callable(end_headers) and not hasattr(end_headers, "_fastsockserver_drain"):
        handler_class.end_headers = _closing_while_draining(end_headers)
    module_globals = vars(module)
    if module_globals.get("time") is not time:  # the text_at functions use this one
        return
    email = module_globals.get("email")
    email_utils = getattr(email, "utils", None)
    date_time_string = methods.get("date_time_string")
    if email_utils is not None and _own_function(
            date_time_string, module, ("self", "timestamp"),
            (("time", "email", "utils", "formatdate"),), (("usegmt",),)):
        formatdate = email_utils.formatdate

        def date_time_at(handler, now):
            # the stdlib's for the reading ``now``
            return formatdate(now, usegmt=True), None
        handler_class.date_time_string = _kept_for_the_second(
            date_time_string, date_time_at, _always_valid,
            [(module_globals, "time"), (module_globals, "email"),
             (vars(email), "utils"), (vars(email_utils), "formatdate")])
    log_date_time_string = methods.get("log_date_time_string")
    if _own_function(log_date_time_string, module, ("self",),
                     (("time", "localtime", "monthname"),), (_LOG_TIME_FORMAT,)):
        handler_class.log_date_time_string = _kept_for_the_second(
            log_date_time_string, _log_date_time_at, _same_month_name,
            [(module_globals, "time"), (vars(time), "localtime")])


_PATCHES = {"http.client": patch_http_client, "http.server": patch_http_server}


class _PatchOnImport:
    """A ``sys.meta_path`` entry that patches http.client and http.server each
    time one is executed (first import, reload, import after removal from
    sys.modules), so that install() does not import them (~40 ms) for
    programs that never do. It stays: taking it out would change the list
    under other threads' imports. It imports nothing (that under the import
    lock could deadlock)."""

    def find_spec(self, name, path=None, target=None):
        patch = _PATCHES.get(name)
        if patch is None:
            return None
        after_self = False
        for finder in list(sys.meta_path):  # the spec the finders after this one give
            if finder is self:
                after_self = True
                continue
            if not after_self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(name, path, target)
            if spec is not None:
                if hasattr(spec.loader, "exec_module"):  # not zipimport on 3.9
                    spec.loader = _PatchAfterExec(spec.loader, patch)
                return spec
        return None


class _PatchAfterExec:
    """Loads the module with its own loader, then patches it. Anything else
    asked of it (get_source, get_code for runpy, ...) is the real loader's."""

    def __init__(self, loader, patch):
        self.loader = loader
        self.patch = patch

    def __getattr__(self, name):
        loader = self.__dict__.get("loader")
        if loader is None:
            raise AttributeError(name)
        return getattr(loader, name)

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module):
        # The module keeps its real loader (reload, inspect.getsource).
        module.__loader__ = module.__spec__.loader = self.loader
        self.loader.exec_module(module)
        self.patch(module)


def patch_http_modules():
    """Patch http.client and http.server now where loaded, and whenever they
    are (re)executed."""
    for name, patch in _PATCHES.items():
        module = sys.modules.get(name)
        if module is not None:
            patch(module)
    if not any(isinstance(finder, _PatchOnImport) for finder in sys.meta_path):
        sys.meta_path.insert(0, _PatchOnImport())
