"""The one place where FASTSOCKSERVER_NO_EXTENSIONS is read.

setup.py loads this file by path too, so building and importing agree on
what the variable means: any value but "", "0", "false", "no" or "off"
(case-insensitive) asks for pure Python.
"""
import os

ENV_VAR = "FASTSOCKSERVER_NO_EXTENSIONS"
_FALSE = ("", "0", "false", "no", "off")


def is_set(value):
    """How every FASTSOCKSERVER_* switch is read: unset, "", "0", "false", "no", "off" are off."""
    return (value or "").strip().lower() not in _FALSE


def no_extensions(environ=os.environ):
    """True when the environment asks for the pure-Python implementation."""
    return is_set(environ.get(ENV_VAR))


NO_EXTENSIONS = no_extensions()
