"""Print a loopback TCP port free now, for a process started later to bind.

Chosen below the kernel's ephemeral range (32768-60999 by default), never with `bind(0)`: a port
the kernel hands out that way is also what it hands to outgoing connections, and one of those (a
component's call to another, a health probe) can take it before the process binds it — the
clean-clone CI once failed on `Address already in use` exactly so.

`python3 scripts/free_port.py [N]` prints N distinct ports, one per line (default 1).
"""

import random
import socket
import sys


def free_ports(n, taken=()):
    rng = random.SystemRandom()
    given = set(taken)
    ports = []
    while len(ports) < n:
        port = rng.randrange(20000, 32000)
        if port in given:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        given.add(port)
        ports.append(port)
    return ports


if __name__ == "__main__":
    for port in free_ports(int(sys.argv[1]) if len(sys.argv) > 1 else 1):
        print(port)
