"""The original tutorial's chat server, as a benchmark peer: ``python naive_server.py HOST PORT``.

A copy written from its description in the shared notes (anchors.md) and the wire contract
in docs/protocol.md: a thread per client, ``recv(1024)``, each received chunk forwarded as it
is to every socket, clients and nicknames in two parallel lists, no lock, no TCP_NODELAY, no
SO_REUSEADDR, ``listen()`` with Python's default backlog. The only change: host and port
come from the command line (the benchmark gives it a free port on 127.0.0.1) instead of
being constants. Its defects (lines interleaved under load, a slow reader blocking everyone,
a busy loop after a client closes) are kept on purpose: this is what lanchat grew out of,
measured as it is.
"""

import socket
import sys
import threading

host = sys.argv[1]
port = int(sys.argv[2])

server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
server.bind((host, port))
server.listen()

clients: list[socket.socket] = []
nicknames: list[str] = []


def broadcast(message: bytes) -> None:
    for client in clients:
        client.send(message)


def handle(client: socket.socket) -> None:
    while True:
        try:
            message = client.recv(1024)
            broadcast(message)
        except:  # noqa: E722 - the tutorial's own
            index = clients.index(client)
            clients.remove(client)
            client.close()
            nickname = nicknames[index]
            broadcast(f"{nickname} Keluar!".encode("ascii"))
            nicknames.remove(nickname)
            break


def receive() -> None:
    while True:
        client, address = server.accept()
        print(f"Connected with {address}")

        client.send("NICK".encode("ascii"))
        nickname = client.recv(1024).decode("ascii")
        nicknames.append(nickname)
        clients.append(client)

        print(f"Nickname is {nickname}")
        broadcast(f"{nickname} Bergabung!".encode("ascii"))
        client.send("Terkoneksi dengan Server!".encode("ascii"))

        thread = threading.Thread(target=handle, args=(client,))
        thread.start()


receive()
