"""Preloaded by the fork server, first: the server dies with the process that started it.

Python's fork server exits once every holder of its "alive" pipe has closed it, and each
process it forks is handed that pipe. So the ranks of a SIGKILLed runner would keep the
server alive, and the server them (ranks die with their parent: `PR_SET_PDEATHSIG`,
`bench.distributed.isolation`). Here the server asks for the same signal: runner killed,
server killed, ranks killed. Importing this module anywhere but in the server is a mistake.
"""

from __future__ import annotations

import os

from bench.distributed.isolation import die_with_parent

_parent = os.getppid()
if die_with_parent() and os.getppid() != _parent:  # the parent died before the prctl took effect
    os._exit(1)
