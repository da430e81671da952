"""Model-server pods that route on the raw request target, as Python servers do.

Python's stdlib `http.server` hands the handler the request target exactly as sent
(`self.path`). Routing on it, `GET /metrics` finds the exposition while the absolute form
`GET http://host:port/metrics` (meant for proxies, RFC 9112 section 3.2.1) is answered 404, the
way uvicorn answers it with its `h11` parser. Written for scraper/tests/strict_origin.rs; it
shares no code with the scraper.

usage: strict_origin_server.py EXPOSITION_FILE PATH [PATH ...]

Starts one pod per PATH on 127.0.0.1 (a free port each), serving the file at that PATH and a
FastAPI-style 404 everywhere else. Prints "127.0.0.1:PORT" per pod, then "ready", and serves
until its standard input closes. Every request target it sees goes to standard error.
"""

import http.server
import sys
import threading

NOT_FOUND = b'{"detail":"Not Found"}'


def handler_for(route: str, exposition: bytes):
    class Handler(http.server.BaseHTTPRequestHandler):
        # Keep-alive with Content-Length, as uvicorn answers.
        protocol_version = "HTTP/1.1"

        def do_GET(self):
            sys.stderr.write(f"{self.server.server_address[1]} {self.command} {self.path}\n")
            if self.path == route:
                self.reply(200, "text/plain; version=0.0.4; charset=utf-8", exposition)
            else:
                self.reply(404, "application/json", NOT_FOUND)

        def reply(self, status: int, content_type: str, body: bytes):
            self.send_response(status)
            self.send_header("content-type", content_type)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    return Handler


def main() -> None:
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    with open(sys.argv[1], "rb") as f:
        exposition = f.read()
    for route in sys.argv[2:]:
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler_for(route, exposition))
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, daemon=True).start()
        print(f"127.0.0.1:{server.server_address[1]}", flush=True)
    print("ready", flush=True)
    sys.stdin.read()


if __name__ == "__main__":
    main()
