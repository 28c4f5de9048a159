"""A threaded TCP server with a known answer, for checking geminst's per-connection figures
against a server that is not geminst's own (and not in Rust).

Each connection sends one line `BURN <microseconds> SEND <bytes>\n`; the handler thread burns that
much of its own CPU time, sends that many bytes, and closes. For every connection the server
prints one JSON line with its own measure: the client's port, the handler's thread CPU time
(time.thread_time_ns), and the bytes it received and sent.

Usage: burn_server.py PORT  (binds 127.0.0.1; prints `listening PORT` when ready)
"""
import json
import socketserver
import sys
import threading
import time

lock = threading.Lock()


class Handler(socketserver.StreamRequestHandler):
    def handle(self):
        start = time.thread_time_ns()
        line = self.rfile.readline(200)
        received = len(line)
        words = line.decode("ascii", "replace").split()
        if len(words) != 4 or words[0] != "BURN" or words[2] != "SEND":
            return
        burn_ns, send = int(words[1]) * 1000, int(words[3])
        end = time.thread_time_ns() + burn_ns
        x = 0
        while time.thread_time_ns() < end:
            x = (x * 6364136223846793005 + 1) & 0xFFFFFFFFFFFFFFFF
        self.wfile.write(b"x" * send)
        self.wfile.flush()
        cpu = time.thread_time_ns() - start
        with lock:
            print(json.dumps({"client_port": self.client_address[1], "cpu_ns": cpu,
                              "received": received, "sent": send}), flush=True)


class Server(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True


if __name__ == "__main__":
    port = int(sys.argv[1])
    with Server(("127.0.0.1", port), Handler) as server:
        print(f"listening {port}", flush=True)
        server.serve_forever()
