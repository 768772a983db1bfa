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
import sys
import time

from ._framing import check_head, checking_framing
from ._http_select import http_path, http_paths
from ._stream_io import _SocketReaderIO, head_read

_plain_message = http_path.plain_message  # (the name tests and fuzzers use)


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
            message = http_path.plain_message(module, lines)
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
    else:  # the form parse_request may read the lines of itself (_http_py)
        for path in http_paths():
            path.PLAIN_PARSERS[parse_headers] = path.PlainParser(
                module, parse_lines, head_read, _SocketReaderIO, check_head)
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

_kept_for_the_second = http_path.kept_for_the_second


_always_valid = http_path.always_valid
_LOG_TIME_FORMAT = http_path.LOG_TIME_FORMAT
_log_date_time_at = http_path.log_date_time_at
_same_month_name = http_path.same_month_name


# ---------------------------------------------------------------- http.server in a drain

def _close_if_draining(handler):
    """While the handler's server drains, add ``Connection: close`` to the
    response whose head is ending: the client then opens its next request's
    connection elsewhere (or later) instead of sending it on this one as
    drain() ends it."""
    state = getattr(getattr(handler, "server", None), "_serving_state", None)
    if state is not None and state.draining:
        _say_close(handler)


def _closing_while_draining(original):
    """BaseHTTPRequestHandler.end_headers with _close_if_draining first;
    ``original`` runs in any case."""
    def end_headers(self):
        _close_if_draining(self)
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


# BaseHTTPRequestHandler's methods that _http_py replaces or does in place,
# as they are in 3.9-3.13: name -> (parameters, the names each form uses, a
# constant it has). A class whose methods are not all these keeps its own.
_HANDLER_FORMS = {
    "parse_request": (("self",), (
        ("command", "default_request_version", "request_version", "close_connection", "str",
         "raw_requestline", "rstrip", "requestline", "split", "len", "startswith",
         "ValueError", "int", "IndexError", "send_error", "HTTPStatus", "BAD_REQUEST",
         "protocol_version", "HTTP_VERSION_NOT_SUPPORTED", "path", "lstrip", "http",
         "client", "parse_headers", "rfile", "MessageClass", "headers", "LineTooLong",
         "REQUEST_HEADER_FIELDS_TOO_LARGE", "HTTPException", "get", "lower",
         "handle_expect_100"),
        # 3.11+ (and 3.10.x security releases): version digits checked with any()
        ("command", "default_request_version", "request_version", "close_connection", "str",
         "raw_requestline", "rstrip", "requestline", "split", "len", "startswith",
         "ValueError", "any", "int", "IndexError", "send_error", "HTTPStatus", "BAD_REQUEST",
         "protocol_version", "HTTP_VERSION_NOT_SUPPORTED", "path", "lstrip", "http",
         "client", "parse_headers", "rfile", "MessageClass", "headers", "LineTooLong",
         "REQUEST_HEADER_FIELDS_TOO_LARGE", "HTTPException", "get", "lower",
         "handle_expect_100")), "100-continue"),
    "handle_one_request": (("self",), tuple(
        ("rfile", "readline", "raw_requestline", "len", "requestline", "request_version",
         "command", "send_error", "HTTPStatus", "REQUEST_URI_TOO_LONG", "close_connection",
         "parse_request", "hasattr", "NOT_IMPLEMENTED", "getattr", "wfile", "flush")
        + timeout + ("log_error",)
        for timeout in [("socket", "timeout"), ("TimeoutError",)]), 65537),
    "log_message": (("self", "format"), (
        ("sys", "stderr", "write", "address_string", "log_date_time_string", "translate",
         "_control_char_table"),), None),  # (its format is split into parts from 3.10)
    "log_request": (("self", "code", "size"), (
        ("isinstance", "HTTPStatus", "value", "log_message", "requestline", "str"),),
        '"%s" %s %s'),
    "send_response": (("self", "code", "message"), (
        ("log_request", "send_response_only", "send_header", "version_string",
         "date_time_string"),), "Server"),
    "send_response_only": (("self", "code", "message"), (
        ("request_version", "responses", "hasattr", "_headers_buffer", "append",
         "protocol_version", "encode"),), "HTTP/0.9"),
    "send_header": (("self", "keyword", "value"), (
        ("request_version", "hasattr", "_headers_buffer", "append", "encode", "lower",
         "close_connection"),), "keep-alive"),
    "end_headers": (("self",), (
        ("request_version", "_headers_buffer", "append", "flush_headers"),), b"\r\n"),
    "flush_headers": (("self",), (
        ("hasattr", "wfile", "write", "join", "_headers_buffer"),), b""),
    "address_string": (("self",), (("client_address",),), 0),
    "version_string": (("self",), (("server_version", "sys_version"),), " "),
}


def _stdlib_handler_methods(module, methods):
    """The stdlib's own methods _http_py stands in for, name -> function (the
    class's ``_control_char_table`` too), or None where one is not a known
    form (or already replaced)."""
    found = {}
    for name, (parameters, names, constant) in _HANDLER_FORMS.items():
        function = methods.get(name)
        if name == "end_headers" and hasattr(function, "_fastsockserver_drain"):
            function = function.__wrapped__  # (our drain wrapper of an earlier install)
        constants = () if constant is None else (constant,)
        if not _own_function(function, module, parameters, names, constants):
            return None
        found[name] = function
    table = methods.get("_control_char_table")
    if not isinstance(table, dict):
        return None
    found["_control_char_table"] = table
    return found


def _patch_handler_methods(handler_class, module, methods, path=http_path):
    """Put the methods of ``path`` (_http_py or its compiled build) on
    BaseHTTPRequestHandler where all the stdlib methods they stand in for are
    the known forms; True if done."""
    stdlib_methods = _stdlib_handler_methods(module, methods)
    if stdlib_methods is None:
        return False
    fast = path.handler_methods(module, stdlib_methods, _close_if_draining, checking_framing)
    for name, function in fast.items():
        functools.update_wrapper(function, stdlib_methods[name])  # __wrapped__: the stdlib's
        setattr(handler_class, name, function)
    handler_class.end_headers._fastsockserver_drain = True
    return True


def patch_http_server(module, path=http_path):
    """Give the http.server ``module``'s BaseHTTPRequestHandler the request
    path of _http_py (where its methods are the stdlib forms known), date
    methods that keep their text for the second, where they are the stdlib's
    own, an end_headers that says ``Connection: close`` while the server
    drains, and ``strict_framing`` (default False) with the parse_request that
    honours it (_framing: it wraps the fast parse_request, which hands it the
    head's lines as parse_headers does)."""
    handler_class = getattr(module, "BaseHTTPRequestHandler", None)
    methods = getattr(handler_class, "__dict__", {})
    if not _patch_handler_methods(handler_class, module, methods, path):
        end_headers = methods.get("end_headers")
        if callable(end_headers) and not hasattr(end_headers, "_fastsockserver_drain"):
            handler_class.end_headers = _closing_while_draining(end_headers)
    methods = getattr(handler_class, "__dict__", {})  # (the fast methods, where put)
    parse_request = methods.get("parse_request")
    if callable(parse_request) and not hasattr(parse_request, "_fastsockserver_framing"):
        handler_class.parse_request = checking_framing(parse_request)
    methods = getattr(handler_class, "__dict__", {})
    if hasattr(methods.get("parse_request"), "_fastsockserver_framing"):
        # its switches, where an install put the checking parse_request
        for name in ("strict_framing", "decodes_chunked"):
            if name not in methods:
                setattr(handler_class, name, False)
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


# ---------------------------------------------------------------- wsgiref

# wsgiref.handlers' methods _http_py's wsgi_handler_methods stands in for, as
# in 3.9-3.13: (class, name) -> (parameters, names used, a constant).
_WSGI_FORMS = {
    ("BaseHandler", "write"): (("self", "data"), (
        ("type", "bytes", "status", "AssertionError", "headers_sent", "len", "bytes_sent",
         "send_headers", "_write", "_flush"),), "write() before start_response()"),
    ("BaseHandler", "send_headers"): (("self",), (
        ("cleanup_headers", "headers_sent", "origin_server", "client_is_modern",
         "send_preamble", "_write", "bytes", "headers"),), None),
    ("BaseHandler", "send_preamble"): (("self",), (
        ("origin_server", "client_is_modern", "_write", "http_version", "status", "encode",
         "headers", "format_date_time", "time", "server_software"),), "iso-8859-1"),
    ("SimpleHandler", "_write"): (("self", "data"), (
        ("stdout", "write", "len", "warnings", "warn", "DeprecationWarning"),), None),
}


def patch_wsgiref_handlers(module, path=http_path):
    """Give wsgiref.handlers ``module``'s BaseHandler a write and send_headers
    that hand the response head and first chunk to _write at once, where
    the methods involved are the stdlib's own (3.9-3.13 forms)."""
    originals = {}
    for (class_name, name), (parameters, names, constant) in _WSGI_FORMS.items():
        function = vars(getattr(module, class_name, object)).get(name)
        if not _own_function(function, module, parameters, names,
                             () if constant is None else (constant,)):
            return
        originals[name] = function
    base = module.BaseHandler
    for name, function in path.wsgi_handler_methods(module, originals).items():
        functools.update_wrapper(function, originals[name])  # __wrapped__: the stdlib's
        setattr(base, name, function)


# wsgiref.simple_server's WSGIRequestHandler.get_environ, as in 3.9-3.12 (with
# REMOTE_HOST from address_string()) and in 3.13: the names each form uses.
_GET_ENVIRON_NAMES = tuple(
    ("server", "base_environ", "copy", "request_version", "server_version", "command",
     "path", "split", "urllib", "parse", "unquote") + remote_host
    + ("client_address", "headers", "get", "get_content_type", "items", "replace", "upper",
       "strip")
    for remote_host in (("address_string",), ()))


def patch_wsgiref_simple_server(module, path=http_path):
    """Give wsgiref.simple_server ``module``'s WSGIRequestHandler a get_environ
    that reads the headers once, where its own is the stdlib's (a known form)."""
    handler_class = getattr(module, "WSGIRequestHandler", None)
    get_environ = vars(handler_class).get("get_environ") if handler_class else None
    client = sys.modules.get("http.client")
    if client is None or not _own_function(get_environ, module, ("self",),
                                           _GET_ENVIRON_NAMES, ("iso-8859-1",)):
        return
    fast = path.wsgi_get_environ(
        module, get_environ, client.HTTPMessage, client.email.parser.compat32,
        "address_string" in get_environ.__code__.co_names)
    functools.update_wrapper(fast, get_environ)  # __wrapped__: the stdlib's
    handler_class.get_environ = fast


_PATCHES = {"http.client": patch_http_client, "http.server": patch_http_server,
            "wsgiref.handlers": patch_wsgiref_handlers,
            "wsgiref.simple_server": patch_wsgiref_simple_server}


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
