"""Sphinx configuration of fastsockserver's documentation.

Why Sphinx (and not MkDocs): it is the Python ecosystem's own tool (CPython's docs are
built with it), it needs no JavaScript toolchain, reStructuredText's roles and directives
check what they refer to, and ``sphinx-build -W -n`` turns every warning, a broken
reference included, into an error: tests/test_docs.py builds the site that way.

Links to the stdlib's documentation go through ``extlinks`` (``:stdlib:`socketserver```)
rather than intersphinx: intersphinx downloads Python's object inventory at build time,
and the test build must work offline.
"""
import ast
import os

HERE = os.path.dirname(os.path.abspath(__file__))


def _version():
    # fastsockserver.__version__ is the one place the version is written; read it
    # from the source without importing the package (the docs build needs no core).
    path = os.path.join(HERE, "..", "src", "fastsockserver", "__init__.py")
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
                getattr(target, "id", None) == "__version__" for target in node.targets):
            return ast.literal_eval(node.value)
    raise RuntimeError("no __version__ in " + path)


project = "fastsockserver"
author = "fastsockserver developers"
copyright = "2026, " + author
release = version = _version()

extensions = ["sphinx.ext.extlinks"]
extlinks = {
    "stdlib": ("https://docs.python.org/3/library/%s.html", "%s"),
    "issue": ("https://github.com/python/cpython/issues/%s", "gh-%s"),
}
exclude_patterns = ["_build"]
highlight_language = "none"
html_theme = "alabaster"
html_title = "fastsockserver " + release
html_static_path = []
