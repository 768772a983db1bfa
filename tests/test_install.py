"""fastsockserver.install() and ``python -m fastsockserver run``, each in a
fresh interpreter (sys.executable, the environment copied)."""
import os
import shutil
import subprocess
import sys
import time

import pytest

from support import free_port, run_code, run_python

SERVE_ALL = r"""
import json, sys, threading, warnings
warnings.simplefilter("error")  # no warning when install() comes first
import fastsockserver
assert fastsockserver.install() is None
import socketserver
import http.server, xmlrpc.server, wsgiref.simple_server
import urllib.request, xmlrpc.client

out = {
    "socketserver": socketserver is fastsockserver,
    "http.server": http.server.socketserver is fastsockserver,
    "xmlrpc.server": xmlrpc.server.socketserver is fastsockserver,
    "wsgiref": issubclass(wsgiref.simple_server.WSGIServer, fastsockserver.TCPServer),
    "http_base": issubclass(http.server.ThreadingHTTPServer, fastsockserver.ThreadingMixIn),
}

def serving(server):
    t = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    t.start()
    return t

def stop(server, t):
    server.shutdown()
    t.join(5)
    server.server_close()

class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = b"hello " + self.path.encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass

httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
t = serving(httpd)
try:
    url = "http://127.0.0.1:%d/x" % httpd.server_address[1]
    with urllib.request.urlopen(url, timeout=5) as r:
        out["http_body"] = r.read().decode()
finally:
    stop(httpd, t)

rpc = xmlrpc.server.SimpleXMLRPCServer(("127.0.0.1", 0), logRequests=False)
rpc.register_function(lambda a, b: a + b, "add")
t = serving(rpc)
try:
    proxy = xmlrpc.client.ServerProxy("http://127.0.0.1:%d" % rpc.server_address[1])
    out["xmlrpc_add"] = proxy.add(2, 3)
finally:
    stop(rpc, t)

def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"wsgi " + environ["PATH_INFO"].encode()]

class QuietHandler(wsgiref.simple_server.WSGIRequestHandler):
    def log_message(self, *args):
        pass

wsgi = wsgiref.simple_server.make_server("127.0.0.1", 0, app, handler_class=QuietHandler)
out["wsgi_is_fast"] = isinstance(wsgi, fastsockserver.TCPServer)
out["wsgi_environ_patched"] = hasattr(QuietHandler.get_environ, "__wrapped__")
t = serving(wsgi)
try:
    with urllib.request.urlopen("http://127.0.0.1:%d/y" % wsgi.server_address[1],
                                timeout=5) as r:
        out["wsgi_body"] = r.read().decode()
finally:
    stop(wsgi, t)
print(json.dumps(out))
"""


@pytest.mark.parametrize("pure", [False, True], ids=["default", "pure"])
def test_install_then_stdlib_servers_use_fastsockserver(pure):
    import json
    env = dict(os.environ)
    if pure:
        env["FASTSOCKSERVER_NO_EXTENSIONS"] = "1"
    out = run_code(SERVE_ALL, env=env)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result == {
        "socketserver": True, "http.server": True, "xmlrpc.server": True,
        "wsgiref": True, "http_base": True, "http_body": "hello /x",
        "xmlrpc_add": 5, "wsgi_is_fast": True, "wsgi_environ_patched": True,
        "wsgi_body": "wsgi /y",
    }


def test_install_warns_for_main_holding_stdlib():
    out = run_code("""
        import warnings
        import socketserver as before
        import fastsockserver
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            fastsockserver.install()
        assert len(caught) == 1 and "__main__" in str(caught[0].message)
        print("ok")
    """)
    assert out.returncode == 0, out.stderr


def test_install_after_http_server_warns():
    out = run_code("""
        import warnings
        import http.server
        import fastsockserver
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            fastsockserver.install()
        runtime = [w for w in caught if issubclass(w.category, RuntimeWarning)]
        assert len(runtime) == 1, [str(w.message) for w in caught]
        print(runtime[0].message)
        print("FILENAME", runtime[0].filename)
        import socketserver
        assert socketserver is fastsockserver
        # the module imported earlier keeps the stdlib
        assert http.server.socketserver is not fastsockserver
    """)
    assert out.returncode == 0, out.stderr
    assert "http.server" in out.stdout
    # stacklevel points at the caller of install(), not into fastsockserver
    assert "FILENAME <string>" in out.stdout


def test_install_after_plain_socketserver_import_does_not_warn():
    out = run_code("""
        import warnings
        warnings.simplefilter("error")
        import socketserver
        stdlib_id = id(socketserver)
        del socketserver  # loaded, but nobody holds it
        import fastsockserver
        fastsockserver.install()
        import socketserver
        assert socketserver is fastsockserver and id(socketserver) != stdlib_id
        print("ok")
    """)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_install_twice_is_a_noop():
    out = run_code("""
        import sys, warnings
        import http.server
        import fastsockserver
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            assert fastsockserver.install() is None
            first = len(caught)
            assert fastsockserver.install() is None
            assert fastsockserver.install() is None
        assert first == 1 and len(caught) == 1, [str(w.message) for w in caught]
        assert sys.modules["socketserver"] is fastsockserver
        print("ok")
    """)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


SCRIPT = """
import json, sys
import socketserver
import fastsockserver
print(json.dumps({"argv": sys.argv, "fast": socketserver is fastsockserver,
                  "name": __name__}))
"""


def test_run_script(tmp_path):
    import json
    script = tmp_path / "script.py"
    script.write_text(SCRIPT)
    out = run_python(["-m", "fastsockserver", "run", "script.py", "arg1"], cwd=str(tmp_path))
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result == {"argv": ["script.py", "arg1"], "fast": True, "name": "__main__"}


def test_run_script_imports_its_own_directory(tmp_path):
    (tmp_path / "helper_mod_fss.py").write_text("VALUE = 42\n")
    (tmp_path / "main.py").write_text("import helper_mod_fss; print(helper_mod_fss.VALUE)\n")
    out = run_python(["-m", "fastsockserver", "run", str(tmp_path / "main.py")])
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "42"


def test_run_module(tmp_path):
    import json
    (tmp_path / "somemodule_fss.py").write_text(SCRIPT)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(tmp_path)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    out = run_python(["-m", "fastsockserver", "run", "-m", "somemodule_fss", "a", "--b"],
                     env=env)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["fast"] is True and result["name"] == "__main__"
    assert result["argv"][1:] == ["a", "--b"]
    assert result["argv"][0].endswith("somemodule_fss.py")


def test_run_missing_file_exits_2(tmp_path):
    missing = str(tmp_path / "no_such_script.py")
    out = run_python(["-m", "fastsockserver", "run", missing])
    assert out.returncode == 2
    assert "no such file" in out.stderr and missing in out.stderr
    assert "Traceback" not in out.stderr


def test_run_without_arguments_exits_2():
    out = run_python(["-m", "fastsockserver", "run"])
    assert out.returncode == 2
    assert "usage" in out.stderr
    out = run_python(["-m", "fastsockserver"])
    assert out.returncode == 2
    assert "usage" in out.stderr


def test_run_script_exit_code_propagates(tmp_path):
    (tmp_path / "exit3.py").write_text("import sys; sys.exit(3)\n")
    out = run_python(["-m", "fastsockserver", "run", str(tmp_path / "exit3.py")])
    assert out.returncode == 3


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_curl_against_run_http_server(tmp_path):
    (tmp_path / "index.txt").write_text("served by fastsockserver\n")
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "fastsockserver", "run", "-m", "http.server",
         "--bind", "127.0.0.1", str(port)],
        cwd=str(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        url = "http://127.0.0.1:{}/index.txt".format(port)
        deadline = time.monotonic() + 20
        while True:
            out = subprocess.run(["curl", "-sS", "--max-time", "5", url],
                                 capture_output=True, text=True, timeout=15)
            if out.returncode == 0 or time.monotonic() > deadline or proc.poll() is not None:
                break
            time.sleep(0.1)
        assert proc.poll() is None, proc.communicate(timeout=5)
        assert out.returncode == 0, out.stderr
        assert out.stdout == "served by fastsockserver\n"
        # a second request on the same server
        out = subprocess.run(["curl", "-sS", "--max-time", "5", "-o", "/dev/null",
                              "-w", "%{http_code}", url + ".missing"],
                             capture_output=True, text=True, timeout=15)
        assert out.stdout == "404"
    finally:
        proc.kill()
        proc.communicate(timeout=10)
