# Types of fastsockserver's public API: the same signatures as the stdlib socketserver
# of the running Python, 3.9-3.15.
import ssl
import sys
import types
from collections.abc import Callable, Iterable
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from socket import socket as _socket
from typing import Any, BinaryIO, ClassVar, TypeVar

from _typeshed import ReadableBuffer
from typing_extensions import Self, TypeAlias

__version__: str
COMPILED: bool

def install() -> None: ...
def serve(
    server: BaseServer,
    *,
    drain_timeout: float | None = 30.0,
    poll_interval: float = 0.5,
    workers: int | None = None,
    reuse_port: bool = False,
) -> bool: ...
def listen_fds(unset_environment: bool = True) -> list[tuple[int, str]]: ...
def adopt_socket(server: _S, fd: int | _socket) -> _S: ...

_S = TypeVar("_S", bound=BaseServer)
_RequestType: TypeAlias = _socket | tuple[bytes, _socket]
_AfUnixAddress: TypeAlias = str | ReadableBuffer
_AfInetAddress: TypeAlias = tuple[str | bytes | bytearray, int]
_Address: TypeAlias = Any

class BaseServer:
    address_family: int
    server_address: _Address
    socket: _socket
    allow_reuse_address: bool
    request_queue_size: int
    socket_type: int
    timeout: float | None
    RequestHandlerClass: Callable[[Any, _Address, Self], BaseRequestHandler]
    def __init__(
        self, server_address: _Address, RequestHandlerClass: Callable[[Any, _Address, Self], BaseRequestHandler]
    ) -> None: ...
    def handle_request(self) -> None: ...
    def serve_forever(self, poll_interval: float = 0.5) -> None: ...
    def shutdown(self) -> None: ...
    def server_close(self) -> None: ...
    def finish_request(self, request: _RequestType, client_address: _Address) -> None: ...
    def handle_error(self, request: _RequestType, client_address: _Address) -> None: ...
    def handle_timeout(self) -> None: ...
    def process_request(self, request: _RequestType, client_address: _Address) -> None: ...
    def server_activate(self) -> None: ...
    def verify_request(self, request: _RequestType, client_address: _Address) -> bool: ...
    def __enter__(self) -> Self: ...
    def __exit__(
        self, exc_type: type[BaseException] | None, exc_val: BaseException | None, exc_tb: types.TracebackType | None
    ) -> None: ...
    def service_actions(self) -> None: ...
    def shutdown_request(self, request: _RequestType) -> None: ...
    def close_request(self, request: _RequestType) -> None: ...
    ssl_context: ssl.SSLContext | None
    ssl_handshake_timeout: float | None
    def drain(self, timeout: float | None = None) -> bool: ...
    def stats(self) -> dict[str, int | bool | None]: ...

class TCPServer(BaseServer):
    if sys.version_info >= (3, 11):
        allow_reuse_port: bool
    first_byte_timeout: float | None
    proxy_protocol_from: str | Iterable[str | IPv4Network | IPv6Network | IPv4Address | IPv6Address] | IPv4Network | IPv6Network | IPv4Address | IPv6Address | None
    proxy_header_timeout: float
    server_address: _AfInetAddress
    def __init__(
        self,
        server_address: _AfInetAddress,
        RequestHandlerClass: Callable[[Any, _Address, Self], BaseRequestHandler],
        bind_and_activate: bool = True,
    ) -> None: ...
    # BaseServer has no fileno, get_request or server_bind (typeshed gives them
    # to it; the stdlib defines them here).
    def fileno(self) -> int: ...
    def server_bind(self) -> None: ...
    def get_request(self) -> tuple[_socket, _Address]: ...

class UDPServer(TCPServer):
    max_packet_size: ClassVar[int]
    def get_request(self) -> tuple[tuple[bytes, _socket], _Address]: ...  # type: ignore[override]

class UnixStreamServer(TCPServer):
    server_address: _AfUnixAddress  # type: ignore[assignment]
    def __init__(
        self,
        server_address: _AfUnixAddress,
        RequestHandlerClass: Callable[[Any, _Address, Self], BaseRequestHandler],
        bind_and_activate: bool = True,
    ) -> None: ...

class UnixDatagramServer(UDPServer):
    server_address: _AfUnixAddress  # type: ignore[assignment]
    def __init__(
        self,
        server_address: _AfUnixAddress,
        RequestHandlerClass: Callable[[Any, _Address, Self], BaseRequestHandler],
        bind_and_activate: bool = True,
    ) -> None: ...

class ForkingMixIn:
    timeout: float | None
    active_children: set[int] | None
    max_children: int
    block_on_close: bool
    def collect_children(self, *, blocking: bool = False) -> None: ...
    def handle_timeout(self) -> None: ...
    def service_actions(self) -> None: ...
    def process_request(self, request: _RequestType, client_address: _Address) -> None: ...
    def server_close(self) -> None: ...

class ThreadingMixIn:
    daemon_threads: bool
    block_on_close: bool
    reuse_threads: bool
    max_threads: int | None
    def process_request_thread(self, request: _RequestType, client_address: _Address) -> None: ...
    def process_request(self, request: _RequestType, client_address: _Address) -> None: ...
    def server_close(self) -> None: ...

class ForkingTCPServer(ForkingMixIn, TCPServer): ...
class ForkingUDPServer(ForkingMixIn, UDPServer): ...
if sys.version_info >= (3, 12):
    class ForkingUnixStreamServer(ForkingMixIn, UnixStreamServer): ...
    class ForkingUnixDatagramServer(ForkingMixIn, UnixDatagramServer): ...

class ThreadingTCPServer(ThreadingMixIn, TCPServer): ...
class ThreadingUDPServer(ThreadingMixIn, UDPServer): ...
class ThreadingUnixStreamServer(ThreadingMixIn, UnixStreamServer): ...
class ThreadingUnixDatagramServer(ThreadingMixIn, UnixDatagramServer): ...

class BaseRequestHandler:
    request: Any
    client_address: _Address
    server: BaseServer
    def __init__(self, request: _RequestType, client_address: _Address, server: BaseServer) -> None: ...
    def setup(self) -> None: ...
    def handle(self) -> None: ...
    def finish(self) -> None: ...

class StreamRequestHandler(BaseRequestHandler):
    rbufsize: ClassVar[int]
    wbufsize: ClassVar[int]
    timeout: ClassVar[float | None]
    disable_nagle_algorithm: ClassVar[bool]
    idle_timeout: ClassVar[float | None]
    headers_timeout: ClassVar[float | None]
    connection: Any
    rfile: BinaryIO
    wfile: BinaryIO

class DatagramRequestHandler(BaseRequestHandler):
    packet: bytes
    socket: _socket
    rfile: BinaryIO
    wfile: BinaryIO
