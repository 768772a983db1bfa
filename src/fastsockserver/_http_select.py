"""Which http.server request path is in use: the compiled ``_http``, or the
pure ``_http_py`` it is compiled from (one source). Chosen as ``_core_select``
chooses the core: ``FASTSOCKSERVER_NO_EXTENSIONS``, or a compiled module
that cannot be imported, gives the pure one."""
from . import _http_py
from ._env import NO_EXTENSIONS

if NO_EXTENSIONS:
    http_path = _http_py
else:
    try:
        from . import _http as http_path
    except ImportError:
        http_path = _http_py

COMPILED = http_path is not _http_py


def http_paths():
    """Both builds loaded (the pure one, and the compiled one where it imports):
    what the fast parse_headers registers itself with."""
    found = [_http_py]
    if COMPILED:
        found.append(http_path)
    else:
        try:
            from . import _http
        except ImportError:
            pass
        else:
            found.append(_http)
    return found
