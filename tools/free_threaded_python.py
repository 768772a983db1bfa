#!/usr/bin/env python3
"""Provide a free-threaded CPython 3.13 (``--disable-gil``) built from Debian's source package.

    python3 tools/free_threaded_python.py          # prints the interpreter's path
    python3 tools/free_threaded_python.py --tsan   # the same, built with ThreadSanitizer

The interpreter is built once into a cache directory outside the repository
(``$FASTSOCKSERVER_CACHE`` or ``~/.cache/fastsockserver``, then
``cpython-<version>t``) and reused by later runs. CPython's own release
tarballs cannot be downloaded on the project's machines, Debian's source
packages can: the script adds a ``deb-src`` entry for trixie beside the
machine's Debian entry (same URIs), installs the build dependencies of the
modules the tests use with apt-get, fetches the source and builds it
(``nice``, ``make -j2``, ``make altinstall``). A build that stops half way
leaves no marker file, so the next run starts over rather than trusting it.
Needs root on Debian; if the source cannot be had the script says why and
exits non-zero.

``--tsan`` builds the variant CPython's own CI runs ThreadSanitizer on
(``--disable-gil --with-thread-sanitizer``, in ``cpython-<version>t-tsan``): a
TSan-instrumented extension in an uninstrumented interpreter gives false
reports, since TSan cannot see the interpreter's own locking (PyMutex,
critical sections). CPython's suppressions files for its own known races
(``Tools/tsan/``) are kept beside it, see ``tsan_suppressions()``.
"""
import glob
import os
import shutil
import subprocess
import sys
import tempfile

VERSION = "3.13.5"
DEBIAN_VERSION = "3.13.5-2+deb13u5"
SUITE = "trixie"
SOURCES_DIR = "/etc/apt/sources.list.d"
SOURCES_FILE = os.path.join(SOURCES_DIR, "fastsockserver-{}-src.sources".format(SUITE))
# ssl, ctypes, zlib, ... as the tests and CPython's socketserver suites import them.
BUILD_DEPENDENCIES = [
    "build-essential", "pkg-config", "libssl-dev", "libffi-dev", "zlib1g-dev", "libbz2-dev",
    "liblzma-dev", "libsqlite3-dev", "libreadline-dev", "libncurses-dev", "uuid-dev",
    "libexpat1-dev", "xz-utils",
]
COMPLETE_MARKER = "BUILD-COMPLETE"


class Unavailable(Exception):
    """The interpreter cannot be provided on this machine (the message says why)."""


# The ThreadSanitizer build: configured as CPython's CI configures its TSan job.
TSAN_CONFIGURE = ["--with-thread-sanitizer"]
# CPython's suppressions for races in CPython itself, copied from the source tree.
TSAN_SUPPRESSIONS = os.path.join("share", "tsan", "suppressions_free_threading.txt")


def cache_dir(tsan=False):
    root = os.environ.get("FASTSOCKSERVER_CACHE") or os.path.expanduser("~/.cache/fastsockserver")
    return os.path.join(root, "cpython-{}t{}".format(VERSION, "-tsan" if tsan else ""))


def tsan_suppressions(prefix=None):
    """Path of CPython's suppressions file kept with the TSan build."""
    return os.path.join(prefix or cache_dir(tsan=True), TSAN_SUPPRESSIONS)


def installed_python(prefix=None):
    """The cached interpreter's path, or None when there is no complete build."""
    prefix = prefix or cache_dir()
    python = os.path.join(prefix, "bin", "python{}t".format(VERSION.rsplit(".", 1)[0]))
    if os.path.exists(os.path.join(prefix, COMPLETE_MARKER)) and os.access(python, os.X_OK):
        return python
    return None


def _run(cmd, **kwargs):
    print("$ " + " ".join(cmd), flush=True)
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          **kwargs)
    if proc.returncode != 0:
        raise Unavailable("`{}` failed ({}):\n{}".format(" ".join(cmd), proc.returncode,
                                                         proc.stdout[-3000:]))
    return proc.stdout


def _debian_entry():
    """The deb822 stanza of the machine's main Debian entry (the base suite's, e.g.
    ``bookworm bookworm-updates``), whose URIs the deb-src entry reuses."""
    for path in sorted(glob.glob(os.path.join(SOURCES_DIR, "*.sources"))):
        if path == SOURCES_FILE:
            continue
        with open(path) as f:
            for stanza in f.read().split("\n\n"):
                fields = dict(line.split(":", 1) for line in stanza.splitlines()
                              if ":" in line and not line.startswith("#"))
                suites = fields.get("Suites", "").split()
                # Debian's main archive (not -security, not a vendor's repository).
                if fields.get("Types", "").strip() == "deb" and suites and \
                        fields.get("URIs", "").strip().rstrip("/").endswith("/debian") and \
                        not any(s.endswith("-security") for s in suites):
                    return {k: v.strip() for k, v in fields.items()}
    raise Unavailable("no Debian deb822 entry in {} to take the URIs from".format(SOURCES_DIR))


def add_source_entry():
    entry = _debian_entry()
    text = "Types: deb-src\nURIs: {}\nSuites: {}\nComponents: {}\n".format(
        entry["URIs"], SUITE, entry.get("Components", "main"))
    if "Signed-By" in entry:
        text += "Signed-By: {}\n".format(entry["Signed-By"])
    current = None
    if os.path.exists(SOURCES_FILE):
        with open(SOURCES_FILE) as f:
            current = f.read()
    if current != text:
        with open(SOURCES_FILE, "w") as f:
            f.write(text)
    _run(["apt-get", "update", "-q"])


def build(prefix, tsan=False):
    if not shutil.which("apt-get") or os.geteuid() != 0:
        raise Unavailable("building it needs apt-get as root (Debian)")
    add_source_entry()
    _run(["apt-get", "install", "-y", "-q", *BUILD_DEPENDENCIES],
         env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"))
    shutil.rmtree(prefix, ignore_errors=True)
    with tempfile.TemporaryDirectory(prefix="cpython-src-") as work:
        _run(["apt-get", "source", "--download-only", "python3.13=" + DEBIAN_VERSION], cwd=work)
        tarball = os.path.join(work, "python3.13_{}.orig.tar.xz".format(VERSION))
        if not os.path.exists(tarball):
            raise Unavailable("apt-get source gave no {}".format(os.path.basename(tarball)))
        _run(["tar", "xf", tarball], cwd=work)
        source = os.path.join(work, "Python-" + VERSION)
        nice = ["nice", "-n", "19"]
        env = None
        if tsan:
            # The build runs the new interpreter (ensurepip, compileall): CPython's
            # own suppressions cover its known races there.
            suppressions = os.path.join(source, "Tools", "tsan",
                                        os.path.basename(TSAN_SUPPRESSIONS))
            if not os.path.exists(suppressions):
                raise Unavailable("the source has no {}".format(suppressions))
            env = dict(os.environ, TSAN_OPTIONS="suppressions=" + suppressions)
        _run(nice + ["./configure", "--disable-gil", "--prefix=" + prefix,
                     "--with-ensurepip=install"] + (TSAN_CONFIGURE if tsan else []),
             cwd=source, env=env)
        _run(nice + ["make", "-j2"], cwd=source, env=env)
        _run(nice + ["make", "altinstall"], cwd=source, env=env)
        if tsan:
            os.makedirs(os.path.dirname(tsan_suppressions(prefix)), exist_ok=True)
            shutil.copy(suppressions, tsan_suppressions(prefix))
            env["TSAN_OPTIONS"] = "suppressions=" + tsan_suppressions(prefix)
    python = os.path.join(prefix, "bin", "python{}t".format(VERSION.rsplit(".", 1)[0]))
    check = "import sys, ssl, ctypes, zlib; assert not sys._is_gil_enabled(); print(sys.version)"
    if tsan:
        # An instrumented interpreter calls into the TSan runtime.
        check += "; import ctypes; ctypes.CDLL(None).__tsan_init"
    print(_run([python, "-c", check], env=env).strip(), flush=True)
    # Written last: its presence is what says the build is whole.
    with open(os.path.join(prefix, COMPLETE_MARKER), "w") as f:
        f.write(DEBIAN_VERSION + "\n")
    return python


def free_threaded_python(tsan=False):
    """Path of the free-threaded interpreter (``tsan``: the ThreadSanitizer build),
    built first when not cached; raises Unavailable."""
    prefix = cache_dir(tsan)
    return installed_python(prefix) or build(prefix, tsan)


def main():
    try:
        print(free_threaded_python(tsan="--tsan" in sys.argv[1:]))
    except Unavailable as e:
        print("FREE-THREADED PYTHON UNAVAILABLE: {}".format(e), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
