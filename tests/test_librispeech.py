"""The LibriSpeech download code against a loopback HTTP server serving archives built here."""

import hashlib
import http.server
import io
import tarfile
import threading
from pathlib import Path

import pytest

from asrflow.librispeech import DownloadError, download_librispeech


def make_archive(members: dict[str, bytes], symlink: str | None = None) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        if symlink:
            info = tarfile.TarInfo(symlink)
            info.type = tarfile.SYMTYPE
            info.linkname = "/etc/passwd"
            tar.addfile(info)
    return buf.getvalue()


GOOD = make_archive({"LibriSpeech/dev-clean/1/2/1-2-0000.flac": b"fLaC" + bytes(5000),
                     "LibriSpeech/dev-clean/1/2/1-2.trans.txt": b"1-2-0000 HELLO\n"})


class Server:
    """Serves ``files`` with Range support; ``cut`` makes the first GET of a file stop halfway."""

    def __init__(self, files: dict[str, bytes], cut: set[str] = frozenset()):
        self.files, self.cut, self.requests = files, set(cut), []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_GET(self):
                name = self.path.rsplit("/", 1)[-1]
                outer.requests.append((name, self.headers.get("Range")))
                data = outer.files.get(name)
                if data is None:
                    self.send_error(404)
                    return
                start = 0
                if self.headers.get("Range"):
                    start = int(self.headers["Range"].split("=")[1].split("-")[0])
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(len(data) - start))
                self.end_headers()
                body = data[start:]
                if name in outer.cut:
                    outer.cut.discard(name)
                    self.wfile.write(body[: len(body) // 2])
                    self.wfile.flush()
                    self.connection.shutdown(2)
                    return
                self.wfile.write(body)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/resources/12"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def serve():
    servers = []

    def start(files, cut=()):
        s = Server(files, set(cut))
        servers.append(s)
        return s
    yield start
    for s in servers:
        s.close()


def sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def test_cut_transfer_resumes_and_verifies(serve, tmp_path):
    s = serve({"dev-clean.tar.gz": GOOD}, cut={"dev-clean.tar.gz"})
    counts = download_librispeech(["dev-clean"], [s.url], tmp_path / "raw", tmp_path / "arch",
                                  checksums={"dev-clean": sha(GOOD)}, timeout=5)
    assert counts == {"dev-clean": 1}
    assert any(r is not None for _, r in s.requests), "second request should resume with Range"
    assert (tmp_path / "raw/LibriSpeech/dev-clean/1/2/1-2.trans.txt").read_text() == "1-2-0000 HELLO\n"
    # re-running skips the verified archive
    n = len(s.requests)
    download_librispeech(["dev-clean"], [s.url], tmp_path / "raw", tmp_path / "arch",
                         checksums={"dev-clean": sha(GOOD)}, timeout=5)
    assert len(s.requests) == n


def test_first_mirror_down_second_used(serve, tmp_path):
    s = serve({"dev-clean.tar.gz": GOOD})
    download_librispeech(["dev-clean"], ["http://127.0.0.1:9/none", s.url], tmp_path / "raw", tmp_path / "arch",
                         checksums={"dev-clean": sha(GOOD)}, timeout=5)
    assert (tmp_path / "raw/LibriSpeech/dev-clean/1/2/1-2-0000.flac").exists()


def test_corrupt_archive_is_refused_and_nothing_extracted(serve, tmp_path):
    bad = bytearray(GOOD)
    bad[len(bad) // 2] ^= 0xFF
    s = serve({"dev-clean.tar.gz": bytes(bad)})
    with pytest.raises(DownloadError) as e:
        download_librispeech(["dev-clean"], [s.url], tmp_path / "raw", tmp_path / "arch",
                             checksums={"dev-clean": sha(GOOD)}, timeout=5)
    msg = str(e.value)
    assert "dev-clean.tar.gz" in msg and sha(GOOD) in msg and sha(bytes(bad)) in msg
    assert not (tmp_path / "raw").exists()
    assert (tmp_path / "arch/dev-clean.tar.gz.bad").exists() and not (tmp_path / "arch/dev-clean.tar.gz").exists()


@pytest.mark.parametrize("archive", [
    make_archive({"LibriSpeech/ok.txt": b"x", "../escape.txt": b"evil"}),
    make_archive({"/tmp/asrflow-abs-escape.txt": b"evil"}),
    make_archive({"LibriSpeech/ok.txt": b"x"}, symlink="LibriSpeech/link"),
])
def test_hostile_members_refused(serve, tmp_path, archive):
    s = serve({"dev-clean.tar.gz": archive})
    target = tmp_path / "deep" / "raw"
    with pytest.raises(DownloadError, match="refusing"):
        download_librispeech(["dev-clean"], [s.url], target, tmp_path / "arch",
                             checksums={"dev-clean": sha(archive)}, timeout=5)
    assert not (tmp_path / "deep" / "escape.txt").exists()
    assert not Path("/tmp/asrflow-abs-escape.txt").exists()
    assert not target.exists() or not any(target.rglob("*"))
