"""HTTP/1.1 responses read from a buffered socket file: status line, headers, sized or
chunked bodies, and a watch body's lines as they arrive. Just what kubexit's API client
needs; http.client would add its email parser and two MiB of memory.
"""

MAX_LINE = 64 * 1024
MAX_BODY = 16 * 1024 * 1024
UNRESERVED = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")


class Transient(Exception):
    """A failure that waiting may heal: a connection error or a broken stream."""


class Response:
    """An HTTP/1.1 response read from a buffered socket file: status line, headers, body."""

    def __init__(self, reader):
        self.reader = reader
        status = reader.readline(MAX_LINE)
        parts = status.split(None, 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
            raise Transient(
                "not an HTTP response: %r" % status[:60] if status else "connection closed"
            )
        self.status = int(parts[1])
        self.reason = parts[2].decode("latin-1").strip() if len(parts) > 2 else ""
        self.headers = {}
        while True:
            line = reader.readline(MAX_LINE)
            if not line.endswith(b"\n"):
                raise Transient("the connection closed in the response headers")
            if not line.strip():
                break
            name, _, value = line.decode("latin-1").partition(":")
            self.headers[name.strip().lower()] = value.strip()
        self.chunked = "chunked" in self.headers.get("transfer-encoding", "").lower()
        length = self.headers.get("content-length", "")
        self.length = int(length) if length.isdigit() and not self.chunked else None

    def body(self, limit):
        """The whole body (at most `limit` bytes)."""
        if self.chunked:
            data = b""
            for chunk in self.chunks():
                data += chunk
                if len(data) > limit:
                    raise Transient("a response body over %d bytes" % limit)
            return data
        if self.length is None:
            return self.reader.read(limit)
        data = self.reader.read(min(self.length, limit))
        if len(data) < min(self.length, limit):
            raise Transient("the connection closed in the middle of the response body")
        return data

    def chunks(self):
        while True:
            line = self.reader.readline(MAX_LINE)
            if not line.endswith(b"\n"):
                raise Transient("the stream ended without its last chunk")
            try:
                size = int(line.split(b";")[0], 16)
            except ValueError:
                raise Transient("a malformed chunk size %r" % line[:40]) from None
            if size == 0:
                while self.reader.readline(MAX_LINE).strip():
                    pass  # trailers
                return
            data = self.reader.read(size + 2)
            if len(data) < size + 2:
                raise Transient("the stream ended in the middle of a chunk")
            yield data[:size]

    def lines(self):
        """The body's complete lines as they arrive (a watch: one JSON event a line)."""
        pending = b""
        source = self.chunks() if self.chunked else iter(lambda: self.reader.read1(MAX_LINE), b"")
        for data in source:
            pending += data
            if b"\n" in pending:
                *complete, pending = pending.split(b"\n")
                yield from complete
            if len(pending) > MAX_BODY:
                raise Transient("a watch event over %d bytes" % MAX_BODY)
        if pending.strip():
            raise Transient("the watch stream ended in the middle of an event")


def quote(text):
    """Percent-encode a query value (RFC 3986 unreserved characters stay)."""
    return "".join(
        chr(byte) if byte in UNRESERVED else "%%%02X" % byte for byte in text.encode("utf-8")
    )
