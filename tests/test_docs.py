"""The documentation: a strict Sphinx build, every example run, one version.

Examples are the README's ``python`` blocks and the docs' ``.. code-block:: python``
blocks. Each runs in a subprocess with a time limit. A block that serves is preceded by a
directive (README: ``<!-- test: ... -->``; docs: the RST comment ``.. test: ...``):

    serve CLIENT SIGNAL [argv-port]

The block's port 8000 becomes a free loopback port (with ``argv-port`` the port is passed
as its first argument instead); once it listens, CLIENT talks to it (``echo``, ``udp-echo``,
``http``, ``proxy-http``, ``xmlrpc``), then SIGNAL (``sigterm``, ``sigint``) must end it.
``.. test: command`` before a shell block runs its ``python -m fastsockserver`` lines.
"""
import ast
import glob
import http.client
import os
import re
import signal
import socket
import subprocess
import sys
import time
import xmlrpc.client

import pytest

import fastsockserver
from fastsockserver import _core_api
from support import free_port, recv_to_end

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = os.path.join(ROOT, "README.md")
DOCS = os.path.join(ROOT, "docs")
RUN_SECONDS = 60      # a `run` example, or a server's start and end
EXAMPLE_PORT = "8000"


class Example:
    def __init__(self, path, line, language, code, directive):
        self.path, self.line, self.language = path, line, language
        self.code, self.directive = code, (directive or "run").split()

    @property
    def id(self):
        return "{}:{}".format(os.path.relpath(self.path, ROOT), self.line)


def _readme_examples():
    lines = open(README, encoding="utf-8").read().split("\n")
    examples, directive = [], None
    i = 0
    while i < len(lines):
        line = lines[i]
        marker = re.match(r"<!-- test: (.*?) -->\s*$", line)
        if marker:
            directive = marker.group(1)
        fence = re.match(r"```(\w*)\s*$", line)
        if fence and fence.group(1):
            start = i + 1
            end = lines.index("```", start)
            examples.append(Example(README, i + 1, fence.group(1),
                                    "\n".join(lines[start:end]) + "\n", directive))
            directive, i = None, end
        elif line.strip() and not marker:
            directive = None
        i += 1
    return examples


def _docs_examples():
    examples = []
    for path in sorted(glob.glob(os.path.join(DOCS, "*.rst"))):
        lines = open(path, encoding="utf-8").read().split("\n")
        directive = None
        for i, line in enumerate(lines):
            marker = re.match(r"\.\. test: (.*)$", line)
            if marker:
                directive = marker.group(1).strip()
                continue
            block = re.match(r"\.\. code-block:: (\w+)\s*$", line)
            if block:
                body = []
                for text in lines[i + 1:]:
                    if text.strip() and not text.startswith("   "):
                        break
                    body.append(text[3:])
                examples.append(Example(path, i + 1, block.group(1),
                                        "\n".join(body).strip("\n") + "\n", directive))
                directive = None
            elif line.strip():
                directive = None
    return examples


EXAMPLES = _readme_examples() + _docs_examples()
PYTHON_EXAMPLES = [e for e in EXAMPLES if e.language == "python"]
COMMAND_EXAMPLES = [e for e in EXAMPLES if e.directive[0] == "command"]


def _env():
    return {k: v for k, v in os.environ.items()
            if not k.startswith("FASTSOCKSERVER_") and k != "PYTHONPATH"}


def test_examples_are_found():
    """The extraction itself: a broken pattern would make every example test vanish."""
    readme = [e for e in PYTHON_EXAMPLES if e.path == README]
    assert len(readme) >= 2 and len(PYTHON_EXAMPLES) >= 10
    kinds = {e.directive[0] for e in PYTHON_EXAMPLES}
    assert kinds == {"run", "serve"}, kinds
    assert COMMAND_EXAMPLES


@pytest.mark.parametrize("example", PYTHON_EXAMPLES, ids=lambda e: e.id)
def test_python_example_runs(example, tmp_path):
    kind = example.directive[0]
    if kind == "run":
        script = tmp_path / "example.py"
        script.write_text(example.code, encoding="utf-8")
        result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                                cwd=str(tmp_path), env=_env(), timeout=RUN_SECONDS)
        assert result.returncode == 0, result.stdout + result.stderr
        return
    assert kind == "serve", "unknown directive {!r}".format(example.directive)
    _serve_example(example, tmp_path)


def _serve_example(example, tmp_path):
    client_name, signal_name = example.directive[1:3]
    argv_port = "argv-port" in example.directive[3:]
    client = CLIENTS[client_name]
    port = free_port(socket.SOCK_DGRAM if client_name == "udp-echo" else socket.SOCK_STREAM)
    code = example.code
    if not argv_port:
        assert EXAMPLE_PORT in code, "a serving example listens on port " + EXAMPLE_PORT
        code = code.replace(EXAMPLE_PORT, str(port))
    script = tmp_path / "example.py"
    script.write_text(code, encoding="utf-8")
    args = [sys.executable, str(script)] + ([str(port)] if argv_port else [])
    # SIGINT as a terminal gives it: a test run started in the background of a
    # non-interactive shell has it ignored, and the example would inherit that.
    server = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              cwd=str(tmp_path), env=_env(),
                              preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + RUN_SECONDS
        while True:
            try:
                client(port)
                break
            except (OSError, http.client.HTTPException):
                if server.poll() is not None or time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        server.send_signal(getattr(signal, signal_name.upper()))
        out, err = server.communicate(timeout=RUN_SECONDS)
    finally:
        if server.poll() is None:
            server.kill()
            server.communicate()
    # serve() drains and returns; serve_forever() ends in KeyboardInterrupt on SIGINT
    # (Python then dies of the signal) unless the program catches it (http.server.test does).
    # The signal can land in a handler still closing its files after the client's reply:
    # an interrupted BufferedWriter.close() then has its finaliser report "flush of closed
    # file", as on the stdlib; the traceback itself must still end in KeyboardInterrupt.
    traceback_text = err.split("\nException ignored in: ")[0]
    interrupted = (signal_name == "sigint" and server.returncode == -signal.SIGINT
                   and traceback_text.rstrip().endswith("KeyboardInterrupt"))
    assert server.returncode == 0 or interrupted, out + err


def _echo(port):
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"hello\n")
        assert sock.makefile("rb").readline() == b"hello\n"


def _udp_echo(port):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(0.5)
        sock.sendto(b"hello\n", ("127.0.0.1", port))
        assert sock.recv(100) == b"hello\n"


def _http(port):
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("GET", "/")
        response = connection.getresponse()
        response.read()
        assert response.status == 200
    finally:
        connection.close()


def _proxy_http(port):
    # What HAProxy's send-proxy sends first: the original client is 192.0.2.1.
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall("PROXY TCP4 192.0.2.1 127.0.0.1 40000 {}\r\n".format(port).encode()
                     + b"GET / HTTP/1.1\r\nHost: app\r\nConnection: close\r\n\r\n")
        reply = recv_to_end(sock)
    assert reply.startswith(b"HTTP/1.1 200"), reply
    assert reply.endswith(b"hello, 192.0.2.1\n"), reply


def _xmlrpc(port):
    with xmlrpc.client.ServerProxy("http://127.0.0.1:{}/".format(port)) as proxy:
        assert proxy.pow(2, 10) == 1024


CLIENTS = {"echo": _echo, "udp-echo": _udp_echo, "http": _http, "proxy-http": _proxy_http,
           "xmlrpc": _xmlrpc}


@pytest.mark.parametrize("example", COMMAND_EXAMPLES, ids=lambda e: e.id)
def test_command_example_runs(example):
    commands = [line.split("#")[0].split() for line in example.code.splitlines()]
    commands = [c for c in commands if c]
    assert commands and all(c[:3] == ["python", "-m", "fastsockserver"] for c in commands)
    for command in commands:
        result = subprocess.run([sys.executable] + command[1:], capture_output=True, text=True,
                                env=_env(), timeout=RUN_SECONDS)
        assert result.returncode == 0, result.stdout + result.stderr
        assert result.stdout.strip()


def test_docs_build_strictly(tmp_path):
    """sphinx-build with warnings as errors (-W), broken references included (-n)."""
    try:
        import sphinx  # noqa: F401
    except ImportError:
        if os.environ.get("FASTSOCKSERVER_REQUIRE_DOCS") == "1":
            pytest.fail("FASTSOCKSERVER_REQUIRE_DOCS=1 and Sphinx is not installed "
                        "(pip install -e '.[docs]')")
        pytest.skip("Sphinx is not installed (the docs extra: pip install -e '.[docs]')")
    result = subprocess.run([sys.executable, "-m", "sphinx", "-W", "--keep-going", "-n", "-q",
                             "-b", "html", DOCS, str(tmp_path / "html")],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert (tmp_path / "html" / "migration.html").exists()


# --- one version, written once -------------------------------------------------------

# "fastsockserver 0.1.0", "fastsockserver-0.1.0", "__version__ == '0.1.0'" (the stdlib
# module's own __version__, "0.4", is mentioned as the stdlib's and matches none of these).
VERSION_MENTION = re.compile(
    r"(?:fastsockserver[ -]v?|__version__\W{0,3}\s*(?:=|==|is)\s*\W{0,3})(\d+\.\d+(?:\.\d+)?)\b",
    re.IGNORECASE)


def _texts():
    paths = [README] + sorted(glob.glob(os.path.join(DOCS, "*.rst")))
    return {path: open(path, encoding="utf-8").read() for path in paths}


def test_every_version_mention_is_the_package_version():
    mentions = [(os.path.relpath(path, ROOT), found)
                for path, text in _texts().items() for found in VERSION_MENTION.findall(text)]
    assert ("README.md", fastsockserver.__version__) in mentions
    assert [m for m in mentions if m[1] != fastsockserver.__version__] == []


def test_docs_conf_reads_the_package_version():
    namespace = {"__file__": os.path.join(DOCS, "conf.py")}
    with open(namespace["__file__"], encoding="utf-8") as f:
        exec(compile(f.read(), namespace["__file__"], "exec"), namespace)
    assert namespace["release"] == namespace["version"] == fastsockserver.__version__
    tree = ast.parse(open(namespace["__file__"], encoding="utf-8").read())
    assert fastsockserver.__version__ not in ast.dump(tree)


# --- what the README promises about itself ----------------------------------------------

def test_readme_is_a_first_screen():
    text = open(README, encoding="utf-8").read()
    assert len(text.splitlines()) <= 200
    cells = [cell.strip() for line in text.splitlines() if line.startswith("|")
             for cell in line.strip("|").split("|")]
    long_cells = [cell for cell in cells if len(cell) > 40]
    assert long_cells == [], "a table cell is prose: move it into the docs"
    head = "\n".join(text.splitlines()[:60])
    for command in ("python3 tools/run_tests.py --quick", "python3 tools/run_tests.py\n",
                    "python3 -m venv .venv"):
        assert command in head + "\n"


def test_readme_links_into_the_docs_resolve():
    text = open(README, encoding="utf-8").read()
    targets = re.findall(r"\]\(((?:docs/|LICENSE)[^)#]*)\)", text)
    assert len(targets) >= 10
    assert [t for t in targets if not os.path.exists(os.path.join(ROOT, t))] == []


def test_internals_lists_the_loop_contract():
    """docs/internals.rst's table of the core's functions is _core_api's list, no more or less."""
    text = open(os.path.join(DOCS, "internals.rst"), encoding="utf-8").read()
    table = text.split("The loop contract", 1)[1].split("Which overrides", 1)[0]
    listed = re.findall(r"^   \* - ``(\w+)``$", table, re.MULTILINE)
    assert sorted(listed) == sorted(_core_api.FUNCTIONS)


def test_migration_reference_has_an_entry_for_every_new_or_changed_name():
    """Each public name fastsockserver adds to the stdlib's API, and each class attribute whose
    value it changes, has a heading of its own in docs/migration.rst."""
    import socketserver as stdlib
    text = open(os.path.join(DOCS, "migration.rst"), encoding="utf-8").read()
    headings = "\n".join(line for line, under in zip(text.splitlines(), text.splitlines()[1:])
                         if under and set(under) == {"~"})
    wanted = {n for n in dir(fastsockserver) if not n.startswith("_") and n not in dir(stdlib)}
    wanted.add("__version__")
    for name in dir(stdlib):
        ours, theirs = getattr(fastsockserver, name, None), getattr(stdlib, name)
        if not isinstance(theirs, type) or ours is None:
            continue
        for attribute in dir(ours):
            if attribute.startswith("_"):
                continue
            if not hasattr(theirs, attribute):
                wanted.add(attribute)
            elif not callable(getattr(theirs, attribute)) and \
                    getattr(theirs, attribute) != getattr(ours, attribute):
                wanted.add(attribute)
    assert "max_threads" in wanted and "request_queue_size" in wanted
    missing = sorted(name for name in wanted if name not in headings)
    assert missing == []
