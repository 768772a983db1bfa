"""``install()``'s second part: ``http.client.parse_headers`` without the email
parser for plain header blocks.

``http.server`` (and ``xmlrpc.server`` and ``wsgiref``, built on it) parses the
headers of every request with ``http.client.parse_headers``, which runs the
``email`` package's feed parser: ~25 us a request here, a third of
``http.server``'s own time for a small GET. Nearly every header block is a few
``Name: value`` lines, and for those the feed parser's result is known: an
``HTTPMessage`` holding the ``(name, value)`` pairs and an empty payload.
``parse_headers`` below builds that message directly and hands every other
block to the email parser, as ``http.client`` does. The lines are read by
``http.client``'s own ``_read_headers``, so its limits and errors are the same.
"""
import functools
import re
import sys

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
    """A parse_headers for the http.client ``module``, same signature."""
    original = module.parse_headers
    stdlib_parse_lines = getattr(module, "_parse_header_lines", None)  # 3.12+

    def parse_headers(fp, _class=module.HTTPMessage):
        lines = module._read_headers(fp)
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

    functools.update_wrapper(parse_headers, original)  # __wrapped__: the stdlib's
    return parse_headers


def _mirrors(module):
    """Whether the http.client ``module``'s parse_headers is its own
    function as of 3.9-3.13, the one _make_parse_headers stands in for: not
    one replaced or wrapped by someone else, not a later version's with
    other parameters."""
    function = module.parse_headers
    code = getattr(function, "__code__", None)
    read_code = getattr(getattr(module, "_read_headers", None), "__code__", None)
    return (code is not None and read_code is not None
            and not hasattr(function, "__wrapped__")
            and getattr(function, "__module__", None) == module.__name__
            and code.co_varnames[:code.co_argcount] == ("fp", "_class")
            and code.co_kwonlyargcount == 0
            and read_code.co_argcount == 1 and read_code.co_kwonlyargcount == 0)


def patch_http_client(module):
    """Give the http.client ``module`` the fast parse_headers, where it can."""
    if _mirrors(module):
        module.parse_headers = _make_parse_headers(module)


class _PatchOnImport:
    """A ``sys.meta_path`` entry that patches http.client each time it is
    executed (first import, reload, import after removal from sys.modules),
    so that install() does not import it (~40 ms) for programs that never
    do. It stays: taking it out would change the list under other threads'
    imports. It imports nothing (that under the import lock could deadlock)."""

    def find_spec(self, name, path=None, target=None):
        if name != "http.client":
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
                    spec.loader = _PatchAfterExec(spec.loader)
                return spec
        return None


class _PatchAfterExec:
    """Loads http.client with its own loader, then patches it. Anything else
    asked of it (get_source, get_code for runpy, ...) is the real loader's."""

    def __init__(self, loader):
        self.loader = loader

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
        patch_http_client(module)


def install_fast_parse_headers():
    """Patch http.client now if it is loaded, and whenever it is (re)executed."""
    module = sys.modules.get("http.client")
    if module is not None:
        patch_http_client(module)
    if not any(isinstance(finder, _PatchOnImport) for finder in sys.meta_path):
        sys.meta_path.insert(0, _PatchOnImport())
