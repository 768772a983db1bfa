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

    def parse_headers(fp, _class=module.HTTPMessage):
        lines = module._read_headers(fp)
        if _class is module.HTTPMessage:
            message = _plain_message(module, lines)
            if message is not None:
                return message
        # What http.client does with the lines (3.9-3.13).
        return module.email.parser.Parser(_class=_class).parsestr(
            b"".join(lines).decode("iso-8859-1"))

    functools.update_wrapper(parse_headers, original)  # __wrapped__: the stdlib's
    return parse_headers


def patch_http_client(module):
    """Give the http.client ``module`` the fast parse_headers (once)."""
    if getattr(module.parse_headers, "__wrapped__", None) is None:
        module.parse_headers = _make_parse_headers(module)


class _PatchOnImport:
    """A one-shot ``sys.meta_path`` entry: patches http.client right after its
    first import, so that install() does not import it (~40 ms) for
    programs that never do."""

    def find_spec(self, name, path=None, target=None):
        if name != "http.client":
            return None
        self.remove()
        import importlib.util
        spec = importlib.util.find_spec(name)
        if spec is not None and hasattr(spec.loader, "exec_module"):
            spec.loader = _PatchAfterExec(spec.loader)
        return spec

    def remove(self):
        try:
            sys.meta_path.remove(self)
        except ValueError:
            pass


class _PatchAfterExec:
    """Loads http.client with its own loader, then patches it."""

    def __init__(self, loader):
        self.loader = loader

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module):
        # The module keeps its real loader (reload, inspect.getsource).
        module.__loader__ = module.__spec__.loader = self.loader
        self.loader.exec_module(module)
        patch_http_client(module)


def install_fast_parse_headers():
    """Patch http.client now if it is loaded, else when it is imported."""
    module = sys.modules.get("http.client")
    if module is not None:
        patch_http_client(module)
    elif not any(isinstance(finder, _PatchOnImport) for finder in sys.meta_path):
        sys.meta_path.insert(0, _PatchOnImport())
