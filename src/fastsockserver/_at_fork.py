"""What a process fork()ed from a serving one must forget, registered only once there
is something to forget.

Each registry of process-wide objects (the pure core's states, the wakers, the states
with handler threads taking requests) resets or drops them in a child with a hook of its
own. A hook runs in every child the process ever forks, a ForkingMixIn's included, and
every object it touches there is a page the child copies: so each is registered the
first time its registry is about to hold something, not on import. A hook runs
twice in a child if an interrupt lands between its registration and its entry in
_registered: each is idempotent.
"""
import os
import threading

_registered: set = set()  # the hooks registered in this process
_lock = threading.Lock()


def forget_in_child(hook):
    """Run hook in each child forked from now on (once, however often asked)."""
    if hook in _registered or not hasattr(os, "register_at_fork"):
        return
    with _lock:
        if hook not in _registered:
            os.register_at_fork(after_in_child=hook)
            _registered.add(hook)
