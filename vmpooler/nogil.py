"""System calls that cannot wait, made with the GIL held.

CPython releases the GIL around every socket call. Under load, with other threads waiting for it, each
release hands it to one of them and the caller queues to get it back, though a non-blocking send or a
peek never waits. These are libc's own ``send``, ``recv`` and ``write`` called through ``ctypes.PyDLL``,
which keeps the GIL (docs/performance.md, "Even connections, system calls that do not hand the GIL over").

They are called without ``argtypes`` (whose conversions cost about 7,000 instructions a request):
ctypes passes a descriptor and a length under :data:`SEND_NOW_MAX` as C ints, bytes as a pointer to
them. Where there is no C library to call this way, :data:`send_now`, :data:`recv_now` and
:data:`write_now` are None and callers use Python's calls.
"""

from __future__ import annotations

import ctypes
import errno
import socket
from typing import Any

__all__ = [
    "PEEK_FLAGS",
    "RECV_FLAGS",
    "SEND_FLAGS",
    "SEND_NOW_MAX",
    "idle_socket_readable",
    "recv_now",
    "send_now",
    "send_some",
    "write_now",
]

PEEK_FLAGS = socket.MSG_PEEK | socket.MSG_DONTWAIT
RECV_FLAGS = socket.MSG_DONTWAIT
SEND_FLAGS = socket.MSG_DONTWAIT | socket.MSG_NOSIGNAL
SEND_NOW_MAX = 1 << 20  # larger writes wait for room in the send buffer anyway (and C's int is 32 bits)

send_now: Any = None  # send_now(fd, data, len(data), SEND_FLAGS) -> bytes sent, or -1 (errno)
recv_now: Any = None  # recv_now(fd, buffer, size, RECV_FLAGS or PEEK_FLAGS) -> bytes read, 0 (closed), -1
write_now: Any = None  # write_now(fd, data, len(data)) -> bytes written, or -1 (errno); fd non-blocking
try:
    _libc = ctypes.PyDLL(None, use_errno=True)
    send_now, recv_now, write_now = _libc.send, _libc.recv, _libc.write
except (OSError, AttributeError):
    pass

_PEEKED = ctypes.create_string_buffer(1)
_WOULD_BLOCK = frozenset({errno.EAGAIN, errno.EWOULDBLOCK, errno.EINTR})


def idle_socket_readable(fd: int) -> bool:
    """Whether a socket that should have nothing to read has: data, an end of file or an error."""
    return recv_now(fd, _PEEKED, 1, PEEK_FLAGS) != -1 or ctypes.get_errno() not in _WOULD_BLOCK


def send_some(fd: int, data: bytes | bytearray) -> int:
    """Send what of ``data`` fits in the socket's buffer now, without handing the GIL over; returns how
    much was sent: 0 also when nothing could be sent this way (no C library, not ``bytes``, larger than
    :data:`SEND_NOW_MAX`, an error), which the caller's own send then meets as before."""
    if send_now is None or type(data) is not bytes or len(data) >= SEND_NOW_MAX:
        return 0
    return max(0, int(send_now(fd, data, len(data), SEND_FLAGS)))
