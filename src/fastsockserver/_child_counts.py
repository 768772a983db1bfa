"""ForkingMixIn's counts from its children: what each child did with its request,
in memory shared with the parent, so the parent's stats() is as complete as a
threading server's.

Before it forks, the parent reserves a row for the child (a row no live child
holds). The child, just before it exits, writes into that row how much each
count grew while it handled its request; it is the row's one writer. The parent
only reads: stats() adds every row to what it has folded in, and a row is folded
in (and zeroed) before it is given to another child. So nothing is counted
twice or lost, and no lock is shared across the fork.
"""
import mmap

COUNTS = ("finished", "errors", "tls_handshake_failures", "proxy_header_failures",
          "framing_rejections")
ROWS_PER_BLOCK = 64


class ChildCounts:
    """The parent's view of its children's counts (one per ForkingMixIn server)."""

    def __init__(self):
        self._blocks = []    # memoryviews of shared mappings ('q': one int64 per count)
        self._holder = []    # per row: the pid of the child holding it, 0: none yet
        self._folded = dict.fromkeys(COUNTS, 0)

    def reserve(self, live_pids):
        """A row for the next child: one whose child is gone (its counts folded
        in first), or a new one. ``live_pids``: the children not yet reaped."""
        for row, pid in enumerate(self._holder):
            if pid not in live_pids:
                self._fold(row)
                self._holder[row] = 0
                return row
        block = mmap.mmap(-1, ROWS_PER_BLOCK * len(COUNTS) * 8)  # shared, anonymous
        self._blocks.append(memoryview(block).cast("q"))
        first = len(self._holder)
        self._holder.extend([0] * ROWS_PER_BLOCK)
        return first

    def held_by(self, row, pid):
        """The parent forked ``pid`` with ``row``."""
        self._holder[row] = pid

    def write(self, row, grown):
        """In the child: its counts' growth (a dict over COUNTS)."""
        view, start = self._cell(row)
        for i, name in enumerate(COUNTS):
            view[start + i] = grown.get(name, 0)

    def totals(self):
        """Every child's counts so far, by name."""
        totals = dict(self._folded)
        for row in range(len(self._holder)):
            view, start = self._cell(row)
            for i, name in enumerate(COUNTS):
                totals[name] += view[start + i]
        return totals

    def _fold(self, row):
        view, start = self._cell(row)
        for i, name in enumerate(COUNTS):
            self._folded[name] += view[start + i]
            view[start + i] = 0

    def _cell(self, row):
        block, index = divmod(row, ROWS_PER_BLOCK)
        return self._blocks[block], index * len(COUNTS)


def counts_of(state):
    """The counts of ``state`` (a ServingState) that a child reports, by name."""
    return {name: getattr(state, name) for name in COUNTS}
