"""The ports tests hand to the servers they start: never an ephemeral one (an outbound client
socket could take it between the pick and the server's bind: CI once lost a worker's metrics
server to EADDRINUSE that way), never the same one twice, always bindable."""

import socket

from tests.support.servers import LISTEN_PORTS, _ephemeral_floor, free_port


def test_ports_come_from_below_the_ephemeral_range_and_are_not_repeated() -> None:
    ports = [free_port() for _ in range(50)]
    assert len(set(ports)) == 50
    assert all(port in LISTEN_PORTS and port < _ephemeral_floor() for port in ports)
    for port in ports[:5]:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", port))


def test_a_port_something_listens_on_is_skipped() -> None:
    taken = []
    try:
        for port in LISTEN_PORTS:
            sock = socket.socket()
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                sock.close()
                continue
            sock.listen()
            taken.append(sock)
            if len(taken) == 200:
                break
        busy = {sock.getsockname()[1] for sock in taken}
        assert not busy & {free_port() for _ in range(200)}
    finally:
        for sock in taken:
            sock.close()
