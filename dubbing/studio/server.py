"""The studio's web layer: a small HTTP server (the standard library's) over a `Studio`.

Safe by construction: a request names a file of the run only as a path relative to the run folder, which is
resolved and must stay inside it (no `..`, no symlink out, no absolute path); the source video, often outside the
folder, is served from one fixed address, never from a request's path. Every text reaches the page as JSON and is
put there with textContent (never as HTML). Changes come only as JSON POSTs from the page's own origin (a form or
script of another site cannot send them), and the Host header must be the address the studio was opened at (DNS
rebinding). A bad request is a 4xx with a one-line JSON error; an unexpected failure a 500 with one line, its
traceback only in the studio's log.
"""

from __future__ import annotations

import json
import logging
import mimetypes
import re
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from dubbing.errors import DubbingError
from dubbing.studio.page import page
from dubbing.studio.session import Studio, StudioError

log = logging.getLogger(__name__)

MAX_BODY = 64 * 1024
CHUNK = 256 * 1024
LOOPBACK = {"127.0.0.1", "localhost", "::1"}
TYPES = {
    ".vtt": "text/vtt",
    ".srt": "text/plain",
    ".wav": "audio/wav",
    ".mp4": "video/mp4",
    ".json": "application/json",
}


def inside(root: Path, relative: str) -> Path:
    """The file `relative` names under `root`, resolved (symlinks followed): refused unless it stays inside."""
    if not relative or "\x00" in relative or relative.startswith(("/", "\\")) or re.match(r"^[a-zA-Z]:", relative):
        raise StudioError("not a file of this run", 404)
    base = root.resolve()
    path = (base / relative).resolve()
    if path != base and base not in path.parents:
        raise StudioError("not a file of this run", 404)
    if not path.is_file():
        raise StudioError("no such file in this run", 404)
    return path


class Handler(BaseHTTPRequestHandler):
    server: StudioServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002  # the standard library's name
        log.debug("%s %s", self.address_string(), format % args)

    # ---------------------------------------------------------------- plumbing
    def _send(self, status: int, body: bytes, kind: str, extra: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        for key, value in (extra or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, data: Any, status: int = 200) -> None:
        self._send(status, json.dumps(data, ensure_ascii=False).encode(), "application/json; charset=utf-8")

    def _error(self, status: int, message: str) -> None:
        self._json({"error": message}, status)

    def _guarded(self, method: str) -> None:
        try:
            self._check_host()
            getattr(self, f"_{method}")()
        except StudioError as exc:
            self._error(exc.status, str(exc))
        except DubbingError as exc:
            self._error(HTTPStatus.CONFLICT, str(exc))
        except (BrokenPipeError, ConnectionResetError):
            pass  # the browser stopped reading (a video seeked elsewhere)
        except Exception as exc:  # the page gets one line; the traceback goes to the studio's log
            log.exception("studio: %s %s failed", method, self.path)
            self._error(
                HTTPStatus.INTERNAL_SERVER_ERROR, f"internal error ({type(exc).__name__}); see the studio's log"
            )

    def _check_host(self) -> None:
        host = (self.headers.get("Host") or "").strip().lower()
        if self.server.hosts is not None and host not in self.server.hosts:
            raise StudioError(f"unexpected Host header {host!r}: open the studio at {self.server.url}", 421)

    def do_GET(self) -> None:  # noqa: N802  # the standard library's name
        self._guarded("get")

    def do_HEAD(self) -> None:  # noqa: N802
        self._guarded("get")

    def do_POST(self) -> None:  # noqa: N802
        self._guarded("post")

    def do_PUT(self) -> None:  # noqa: N802
        self._error(HTTPStatus.METHOD_NOT_ALLOWED, "method not allowed")

    do_DELETE = do_PATCH = do_PUT  # noqa: N815

    # ---------------------------------------------------------------- GET
    def _get(self) -> None:
        url = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        studio = self.server.studio
        route = unquote(url.path)
        if route == "/":
            self._send(200, page(studio.layout.name).encode(), "text/html; charset=utf-8", self._page_headers())
        elif route == "/api/state":
            self._json(studio.state(query.get("lang") or studio.languages[0]))
        elif route == "/api/render":
            self._json(studio.render.status())
        elif route == "/api/bank":
            self._json({"voices": studio.bank(studio.check_language(query.get("lang")))})
        elif route == "/source":
            self._file(Path(studio.manifest.source))  # a fixed path, never one from the request
        elif route.startswith("/files/"):
            self._file(inside(studio.out, route.removeprefix("/files/")))
        elif m := re.fullmatch(r"/export/([a-z]{2,3}(?:-[A-Za-z0-9]+)?)\.srt", route):
            lang = studio.check_language(m.group(1))
            body = studio.export_srt(lang).encode()
            name = f"{studio.layout.name}.{lang}.srt".replace('"', "")
            self._send(
                200, body, "text/plain; charset=utf-8", {"Content-Disposition": f'attachment; filename="{name}"'}
            )
        else:
            raise StudioError("no such page", 404)

    def _page_headers(self) -> dict[str, str]:
        """Nothing loads from elsewhere and nothing runs but the page's own inline script."""
        return {
            "Content-Security-Policy": "default-src 'self'; script-src 'self' 'unsafe-inline'; "
            "style-src 'self' 'unsafe-inline'; media-src 'self'; img-src 'self' data:; connect-src 'self'; "
            "frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
            "Referrer-Policy": "no-referrer",
        }

    def _file(self, path: Path) -> None:
        """A whole file or the byte range a media element asks for (seeking needs ranges)."""
        if not path.is_file():
            raise StudioError("no such file", 404)
        size = path.stat().st_size
        kind = TYPES.get(path.suffix.lower()) or mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        start, end, status = 0, size - 1, 200
        if spec := self.headers.get("Range"):
            m = re.fullmatch(r"bytes=(\d*)-(\d*)", spec.strip())
            if not m or (not m.group(1) and not m.group(2)):
                raise StudioError("bad Range header", 416)
            if m.group(1):
                start, end = int(m.group(1)), min(int(m.group(2) or size - 1), size - 1)
            else:
                start = max(size - int(m.group(2)), 0)
            if start > end or start >= size:
                self._send(416, b"", "text/plain", {"Content-Range": f"bytes */{size}"})
                return
            status = 206
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(end - start + 1))
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("X-Content-Type-Options", "nosniff")
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.end_headers()
        if self.command == "HEAD":
            return
        with open(path, "rb") as handle:
            handle.seek(start)
            left = end - start + 1
            while left > 0 and (chunk := handle.read(min(CHUNK, left))):
                self.wfile.write(chunk)
                left -= len(chunk)

    # ---------------------------------------------------------------- POST
    def _body(self) -> dict:
        if (self.headers.get("Content-Type") or "").split(";")[0].strip() != "application/json":
            raise StudioError("send JSON (Content-Type: application/json)", 415)
        try:
            length = int(self.headers.get("Content-Length") or "0")
        except ValueError:
            raise StudioError("bad Content-Length", 400) from None
        if not 0 < length <= MAX_BODY:
            raise StudioError(f"a request body of 1 to {MAX_BODY} bytes is expected", 413 if length else 400)
        try:
            data = json.loads(self.rfile.read(length))
        except (ValueError, UnicodeDecodeError):
            raise StudioError("the body is not JSON", 400) from None
        if not isinstance(data, dict):
            raise StudioError("the body must be a JSON object", 400)
        return data

    def _post(self) -> None:
        route = urlsplit(self.path).path
        origin = self.headers.get("Origin")
        if origin is not None and origin.lower() != f"http://{(self.headers.get('Host') or '').lower()}":
            raise StudioError("requests from another site are refused", 403)
        body = self._body()
        studio, lang = self.server.studio, body.get("lang")
        actions = {
            "/api/line": lambda: studio.edit_line(lang, body.get("index"), body.get("text"), body.get("speaker")),
            "/api/estimate": lambda: studio.estimate(lang, _text(body), body.get("index")),
            "/api/voice": lambda: studio.pick_voice(lang, body.get("speaker"), body.get("voice")),
            "/api/approve": lambda: studio.approve(lang, body.get("index"), bool(body.get("approved"))),
            "/api/undo": lambda: studio.undo(lang),
            "/api/regenerate": lambda: studio.regenerate(lang, body.get("index")),
            "/api/render": lambda: studio.render.start(lang),
        }
        if route not in actions:
            raise StudioError("no such action", 404)
        self._json(actions[route](), 202 if route == "/api/render" else 200)


def _text(body: dict) -> str:
    text = body.get("text")
    if not isinstance(text, str) or len(text) > 2000:
        raise StudioError("a line's text is a string of at most 2000 characters")
    return text


class StudioServer(ThreadingHTTPServer):
    """The studio at http://HOST:PORT/ (PORT 0: any free one)."""

    daemon_threads = True

    def __init__(self, studio: Studio, host: str = "127.0.0.1", port: int = 0) -> None:
        self.studio = studio
        super().__init__((host, port), Handler)
        bound = self.server_address[1]
        shown = f"[{host}]" if ":" in host else host
        self.url = f"http://{shown}:{bound}/"
        # bound to loopback, only the loopback names may be asked for (a rebound DNS name is refused); bound to
        # another interface, it is reached by whatever name the network gives it
        names = LOOPBACK if host in LOOPBACK else None
        self.hosts = {f"[{n}]:{bound}" if ":" in n else f"{n}:{bound}" for n in names} if names else None

    def start(self) -> threading.Thread:
        """Serve in a background thread (tests, and the CLI's foreground loop)."""
        thread = threading.Thread(target=self.serve_forever, daemon=True, name="studio")
        thread.start()
        return thread

    def close(self) -> None:
        self.studio.close()
        self.shutdown()
        self.server_close()
