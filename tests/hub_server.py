"""A loopback server answering the Hub endpoints that ``huggingface_hub`` calls to create a repo and
commit files, recording every commit (no uploads are accepted by any real server here)."""

from __future__ import annotations

import base64
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class RecordingHub:
    def __init__(self) -> None:
        self.created: list[dict] = []
        self.commits: list[dict] = []
        self.unknown: list[str] = []
        self.validated: list[dict] = []
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def _json(self, code: int, obj) -> None:
                body = json.dumps(obj).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _body(self) -> bytes:
                return self.rfile.read(int(self.headers.get("Content-Length", 0) or 0))

            def do_POST(self):  # noqa: N802
                body = self._body()
                parts = self.path.split("?")[0].strip("/").split("/")
                if parts[:3] == ["api", "repos", "create"]:
                    req = json.loads(body)
                    hub.created.append(req)
                    name = f"{req.get('organization') or 'user'}/{req['name']}"
                    return self._json(200, {"url": f"{hub.url}/{name}", "name": name})
                if parts[:2] == ["api", "validate-yaml"]:
                    hub.validated.append(json.loads(body))
                    return self._json(200, {"errors": [], "warnings": []})
                if parts[:2] == ["api", "models"] and "preupload" in parts:
                    files = json.loads(body)["files"]
                    return self._json(200, {"files": [{"path": f["path"], "uploadMode": "regular",
                                                       "shouldIgnore": False, "oid": None} for f in files]})
                if parts[:2] == ["api", "models"] and "commit" in parts:
                    i = parts.index("commit")
                    lines = [json.loads(ln) for ln in body.decode().splitlines() if ln.strip()]
                    files = {}
                    for ln in lines:
                        if ln["key"] == "file":
                            files[ln["value"]["path"]] = base64.b64decode(ln["value"]["content"])
                    hub.commits.append({"repo": "/".join(parts[2:i]), "revision": "/".join(parts[i + 1:]),
                                        "header": lines[0]["value"], "files": files})
                    return self._json(200, {"success": True, "commitOid": "0" * 40,
                                            "commitUrl": f"{hub.url}/{'/'.join(parts[2:i])}/commit/" + "0" * 40})
                hub.unknown.append(f"POST {self.path}")
                return self._json(404, {"error": "not handled"})

            def do_GET(self):  # noqa: N802
                hub.unknown.append(f"GET {self.path}")
                return self._json(404, {"error": "not handled"})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> RecordingHub:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
