"""A seed's server for provision's fan-out (raykit.fanout), run by systemd-run with the host's own
Python: GET /DIGEST sends that archive, to the listed addresses only. No state, no writes.

argv: ADDRESS PORT ALLOWED,ADDRESSES DIGEST=PATH...
"""

import http.server
import os
import socket
import socketserver
import sys

ADDRESS, PORT, ALLOWED = sys.argv[1], int(sys.argv[2]), set(sys.argv[3].split(","))
FILES = dict(arg.split("=", 1) for arg in sys.argv[4:])


class Handler(http.server.BaseHTTPRequestHandler):
    timeout = 60  # an idle or stalled client does not hold its thread until the deadline

    def do_GET(self) -> None:
        if self.client_address[0] not in ALLOWED:
            self.send_error(403)
            return
        path = FILES.get(self.path.lstrip("/"))
        if path is None:
            self.send_error(404)
            return
        with open(path, "rb") as f:
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(os.fstat(f.fileno()).st_size))
            self.end_headers()
            self.connection.sendfile(f)


class Server(http.server.ThreadingHTTPServer):
    def server_bind(self) -> None:
        # HTTPServer's own looks the address up in DNS, which hangs on hosts that reach no resolver.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = ADDRESS, PORT


def notify_ready() -> None:
    """Tell systemd (Type=notify) it listens: systemd-run returns only then."""
    address = os.environ.get("NOTIFY_SOCKET", "")
    if address:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.connect("\0" + address[1:] if address.startswith("@") else address)
            sock.sendall(b"READY=1")


try:
    server = Server((ADDRESS, PORT), Handler)
except OSError as exc:  # one line in the journal, which provision shows
    sys.exit(f"cannot listen on {ADDRESS}:{PORT}: {exc.strerror}")
notify_ready()
server.serve_forever()
