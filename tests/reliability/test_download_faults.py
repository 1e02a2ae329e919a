"""The LibriSpeech download code against a loopback HTTP server (127.0.0.1, honouring Range)
serving LibriSpeech-shaped archives built here from synthesised audio."""

import gzip
import hashlib
import http.server
import io
import os
import random
import tarfile
import tempfile
import threading
from pathlib import Path

import pytest

from asrflow.data.archives import DownloadError, extract_archives
from asrflow.data.librispeech import LM_CORPUS, SUBSETS, download_librispeech
from conftest import PARAMS


def make_archive(members: dict[str, bytes], symlink: str | None = None, special: bytes | None = None) -> bytes:
    """A .tar.gz of ``members``, plus a symlink to /etc/passwd named ``symlink`` and/or a member
    of tar type ``special`` (a device, a FIFO, a hard link) named LibriSpeech/special."""
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
        if special:
            info = tarfile.TarInfo("LibriSpeech/special")
            info.type, info.devmajor, info.devminor = special, 1, 3  # /dev/null's numbers for a device
            info.linkname = "LibriSpeech/ok.txt" if special == tarfile.LNKTYPE else ""
            tar.addfile(info)
    return buf.getvalue()


def _spoken_flac() -> bytes:
    """A real FLAC: espeak-ng + sox, as the synth corpus is made."""
    from asrflow.data.synth import Speaker, Utterance, synthesize
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "u.flac"
        synthesize(Utterance(Speaker(1, "en-us", "m1", "dev"), "dev", 2, 0, "hello", 160, 50), path)
        return path.read_bytes()


FLAC = _spoken_flac()
GOOD = make_archive({"LibriSpeech/dev-clean/1/2/1-2-0000.flac": FLAC,
                     "LibriSpeech/dev-clean/1/2/1-2.trans.txt": b"1-2-0000 HELLO\n",
                     "LibriSpeech/SPEAKERS.TXT": b"1 | M | dev-clean | 0.01 | test\n"})
LM_TEXT = gzip.compress(b"HELLO WORLD\nSAY HELLO\n", mtime=0)
MAX_GB = PARAMS["download"]["max_extracted_gb"]  # the limit as shipped


class Server:
    """Serves ``files`` with Range support; ``cut`` makes the first GET of a file stop halfway
    (every GET with ``cut_always``). ``mode`` is how the body is framed: ``length`` (a
    Content-Length header), ``chunked`` (Transfer-Encoding: chunked; a cut stops after the
    first half's chunk, with no terminating chunk) or ``nolength`` (neither: the body ends
    when the connection closes, so a cut looks like the end)."""

    def __init__(self, files: dict[str, bytes], cut: set[str] = frozenset(), mode: str = "length",
                 cut_always: bool = False):
        self.files, self.cut, self.requests = files, set(cut), []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_GET(self):
                name = self.path.split("/resources/", 1)[-1]  # "<resource>/<file>"
                outer.requests.append((name, self.headers.get("Range")))
                data = outer.files.get(name)
                if data is None:
                    self.send_error(404)
                    return
                start = 0
                if self.headers.get("Range"):
                    start = int(self.headers["Range"].split("=")[1].split("-")[0])
                    if start >= len(data):
                        self.send_error(416)
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                if mode == "length":
                    self.send_header("Content-Length", str(len(data) - start))
                elif mode == "chunked":
                    self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                body = data[start:]
                cut = name in outer.cut
                if cut and not cut_always:
                    outer.cut.discard(name)
                if cut:
                    body = body[: len(body) // 2]
                self.wfile.write(b"%x\r\n%s\r\n" % (len(body), body) if mode == "chunked" else body)
                if cut:
                    self.wfile.flush()
                    self.connection.shutdown(2)
                elif mode == "chunked":
                    self.wfile.write(b"0\r\n\r\n")

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/resources"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def serve():
    servers = []

    def start(files, cut=(), mode="length", cut_always=False):
        s = Server(files, set(cut), mode, cut_always)
        servers.append(s)
        return s
    yield start
    for s in servers:
        s.close()


def sha(b: bytes) -> str:
    return "sha256:" + hashlib.sha256(b).hexdigest()


def fetch(s, tmp_path, files=("dev-clean",), lm=False, sums=None, mirrors=None):
    sizes = download_librispeech(list(files), mirrors or [s.url], tmp_path / "store", tmp_path / "archives",
                                 lm_corpus=lm, checksums=sums or {"dev-clean": sha(GOOD)}, timeout=5, retries=2)
    extract_archives(tmp_path / "archives", tmp_path / "raw", max_gb=MAX_GB)
    return sizes


def test_pins_cover_every_subset_and_the_lm_text():
    assert sorted(SUBSETS) == sorted(["dev-clean", "dev-other", "test-clean", "test-other", "train-clean-100",
                                      "train-clean-360", "train-other-500"])
    assert all(len(r.sums["md5"]) == 32 and len(r.sums["sha256"]) == 64 and r.resource == 12 for r in SUBSETS.values())
    assert LM_CORPUS.resource == 11 and len(LM_CORPUS.sums["md5"]) == 32


def test_cut_transfer_resumes_and_verifies(serve, tmp_path):
    s = serve({"12/dev-clean.tar.gz": GOOD, "11/librispeech-lm-norm.txt.gz": LM_TEXT},
              cut={"12/dev-clean.tar.gz", "11/librispeech-lm-norm.txt.gz"})
    sizes = fetch(s, tmp_path, lm=True, sums={"dev-clean": sha(GOOD),
                                              "librispeech-lm-norm.txt.gz": "md5:" + hashlib.md5(LM_TEXT).hexdigest()})
    assert sizes == {"dev-clean.tar.gz": len(GOOD), "librispeech-lm-norm.txt.gz": len(LM_TEXT)}
    ranged = [(n, r) for n, r in s.requests if r]
    assert [n for n, _ in ranged] == ["12/dev-clean.tar.gz", "11/librispeech-lm-norm.txt.gz"], s.requests
    assert all(r != "bytes=0-" for _, r in ranged)
    assert (tmp_path / "raw/LibriSpeech/dev-clean/1/2/1-2-0000.flac").read_bytes() == FLAC
    assert (tmp_path / "archives/librispeech-lm-norm.txt.gz").read_bytes() == LM_TEXT
    assert not list((tmp_path / "store").glob("*.part"))
    # the product is a hard link to the verified store: no second copy
    assert (tmp_path / "archives/dev-clean.tar.gz").stat().st_ino == (tmp_path / "store/dev-clean.tar.gz").stat().st_ino
    # re-running skips verified archives (no request, no re-hash) and extracted subsets
    n = len(s.requests)
    flac = tmp_path / "raw/LibriSpeech/dev-clean/1/2/1-2-0000.flac"
    before = flac.stat().st_mtime_ns
    fetch(s, tmp_path, lm=True, sums={"dev-clean": sha(GOOD),
                                      "librispeech-lm-norm.txt.gz": "md5:" + hashlib.md5(LM_TEXT).hexdigest()})
    assert len(s.requests) == n and flac.stat().st_mtime_ns == before


def test_complete_part_file_is_verified_not_refetched(serve, tmp_path):
    """Killed after the last byte but before verification: the server answers the Range
    request with 416, and the whole .part is verified and kept."""
    s = serve({"12/dev-clean.tar.gz": GOOD})
    (tmp_path / "store").mkdir()
    (tmp_path / "store/dev-clean.tar.gz.part").write_bytes(GOOD)
    fetch(s, tmp_path)
    assert s.requests == [("12/dev-clean.tar.gz", f"bytes={len(GOOD)}-")]
    assert (tmp_path / "raw/LibriSpeech/dev-clean/1/2/1-2-0000.flac").read_bytes() == FLAC


def test_pinned_md5_is_checked(serve, tmp_path):
    """With no override the pinned OpenSLR MD5 applies: a different file is refused."""
    s = serve({"12/dev-clean.tar.gz": GOOD})
    with pytest.raises(DownloadError, match=SUBSETS["dev-clean"].sums["md5"]):
        download_librispeech(["dev-clean"], [s.url], tmp_path / "store", tmp_path / "archives", timeout=5)


def test_first_mirror_down_second_used(serve, tmp_path):
    s = serve({"12/dev-clean.tar.gz": GOOD})
    fetch(s, tmp_path, mirrors=["http://127.0.0.1:9/none", s.url])
    assert (tmp_path / "raw/LibriSpeech/dev-clean/1/2/1-2-0000.flac").exists()


def test_corrupt_archive_is_refused_and_nothing_extracted(serve, tmp_path):
    bad = bytearray(GOOD)
    bad[len(bad) // 2] ^= 0xFF
    s = serve({"12/dev-clean.tar.gz": bytes(bad)})
    with pytest.raises(DownloadError) as e:
        fetch(s, tmp_path)
    msg = str(e.value)
    assert "dev-clean.tar.gz" in msg and sha(GOOD)[7:] in msg and sha(bytes(bad))[7:] in msg
    assert not (tmp_path / "raw").exists() and not (tmp_path / "archives/dev-clean.tar.gz").exists()
    assert (tmp_path / "store/dev-clean.tar.gz.bad").exists() and not (tmp_path / "store/dev-clean.tar.gz").exists()


def test_tampered_archive_after_download_is_caught(serve, tmp_path):
    """The verified stamp holds size and mtime: a file changed since is hashed again."""
    s = serve({"12/dev-clean.tar.gz": GOOD})
    fetch(s, tmp_path)
    stored = tmp_path / "store/dev-clean.tar.gz"
    data = bytearray(stored.read_bytes())
    data[100] ^= 0xFF
    stored.write_bytes(bytes(data))
    fetch(s, tmp_path)  # re-fetched because the stored copy no longer verifies
    assert stored.read_bytes() == GOOD


@pytest.mark.parametrize("archive", [
    make_archive({"LibriSpeech/ok.txt": b"x", "../escape.txt": b"evil"}),
    make_archive({"/tmp/asrflow-abs-escape.txt": b"evil"}),
    make_archive({"LibriSpeech/ok.txt": b"x"}, symlink="LibriSpeech/link"),
    make_archive({"LibriSpeech/ok.txt": b"x"}, special=tarfile.CHRTYPE),
    make_archive({"LibriSpeech/ok.txt": b"x"}, special=tarfile.BLKTYPE),
    make_archive({"LibriSpeech/ok.txt": b"x"}, special=tarfile.FIFOTYPE),
    make_archive({"LibriSpeech/ok.txt": b"x"}, special=tarfile.LNKTYPE),
], ids=["dotdot", "absolute", "symlink", "char-device", "block-device", "fifo", "hardlink"])
def test_hostile_members_refused(serve, tmp_path, archive):
    s = serve({"12/dev-clean.tar.gz": archive})
    with pytest.raises(DownloadError, match="refusing"):
        fetch(s, tmp_path, sums={"dev-clean": sha(archive)})
    assert not (tmp_path / "escape.txt").exists() and not (tmp_path.parent / "escape.txt").exists()
    assert not Path("/tmp/asrflow-abs-escape.txt").exists()
    raw = tmp_path / "raw"
    assert not any(p for p in raw.rglob("*") if p.name != ".extracted"), list(raw.rglob("*"))


def test_killed_extraction_leaves_no_half_subset(tmp_path):
    """kill -9 in the middle of extracting: the subset is absent (not half there), no stamp
    claims it, and the next run extracts it whole."""
    import json
    import os
    import signal
    import subprocess
    import sys
    import time
    members = {f"LibriSpeech/dev-clean/1/2/1-2-{i:04d}.flac": os.urandom(200_000) for i in range(400)}
    archive = make_archive(members)
    arch = tmp_path / "archives"
    arch.mkdir()
    (arch / "dev-clean.tar.gz").write_bytes(archive)
    (arch / "checksums.json").write_text(json.dumps({"dev-clean.tar.gz": {"sha256": sha(archive)[7:]}}))
    raw = tmp_path / "raw"
    code = f"from pathlib import Path; from asrflow.data.archives import extract_archives; " \
           f"extract_archives(Path({str(arch)!r}), Path({str(raw)!r}), max_gb={MAX_GB})"
    proc = subprocess.Popen([sys.executable, "-c", code])
    deadline = time.time() + 60
    while time.time() < deadline and not any(raw.glob(".extract-*/LibriSpeech/dev-clean/1/2/*.flac")):
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (raw / "LibriSpeech" / "dev-clean").exists()
    assert not (raw / ".extracted" / "dev-clean.tar.gz").exists()
    assert extract_archives(arch, raw, max_gb=MAX_GB) == {"dev-clean.tar.gz": True}
    assert len(list((raw / "LibriSpeech/dev-clean/1/2").glob("*.flac"))) == 400
    assert not list(raw.glob(".extract-*")), "the killed run's temporary tree is cleaned up"
    assert extract_archives(arch, raw, max_gb=MAX_GB) == {"dev-clean.tar.gz": False}


# --- transfers cut every way they can be ------------------------------------------------

@pytest.mark.parametrize("mode", ["chunked", "nolength"])
def test_cut_transfer_without_content_length_resumes_and_verifies(serve, tmp_path, mode):
    """A chunked body cut mid-way (http.client raises IncompleteRead) and a body with no
    declared length cut mid-way (it just ends, as a whole one would): both resume from the
    bytes received with a Range request and end verified; nothing is called corrupt."""
    s = serve({"12/dev-clean.tar.gz": GOOD}, cut={"12/dev-clean.tar.gz"}, mode=mode)
    fetch(s, tmp_path)
    assert s.requests == [("12/dev-clean.tar.gz", None), ("12/dev-clean.tar.gz", f"bytes={len(GOOD) // 2}-")]
    assert (tmp_path / "store/dev-clean.tar.gz").read_bytes() == GOOD
    assert (tmp_path / "raw/LibriSpeech/dev-clean/1/2/1-2-0000.flac").read_bytes() == FLAC
    assert not list((tmp_path / "store").glob("*.part")) and not list((tmp_path / "store").glob("*.bad"))


@pytest.mark.parametrize("mode", ["length", "chunked", "nolength"])
def test_every_attempt_cut_names_the_file_and_the_url(serve, tmp_path, mode):
    """Every response cut half-way: each attempt resumes (the file grows by half of what is
    left), the retry budget runs out, and the error names the file and the URL; the partial
    file is kept for the next run, not moved aside as corrupt."""
    s = serve({"12/dev-clean.tar.gz": GOOD}, cut={"12/dev-clean.tar.gz"}, mode=mode, cut_always=True)
    with pytest.raises(DownloadError) as e:
        fetch(s, tmp_path)
    msg = str(e.value)
    assert "dev-clean.tar.gz" in msg and f"{s.url}/12/dev-clean.tar.gz" in msg, msg
    assert len(s.requests) == 2 and s.requests[1][1] == f"bytes={len(GOOD) // 2}-", s.requests
    part = tmp_path / "store/dev-clean.tar.gz.part"
    assert part.read_bytes() == GOOD[: len(GOOD) // 2 + (len(GOOD) - len(GOOD) // 2) // 2]
    assert not (tmp_path / "store/dev-clean.tar.gz.bad").exists() and not (tmp_path / "raw").exists()


def test_corrupt_body_without_content_length_is_still_refused(serve, tmp_path):
    """The flip side of resuming undeclared bodies: a whole but corrupt one is resumed once,
    the server answers 416 (nothing more), and only then is it a checksum mismatch."""
    bad = bytearray(GOOD)
    bad[len(bad) // 2] ^= 0xFF
    s = serve({"12/dev-clean.tar.gz": bytes(bad)}, mode="nolength")
    with pytest.raises(DownloadError, match="checksum mismatch") as e:
        fetch(s, tmp_path)
    assert "dev-clean.tar.gz" in str(e.value) and sha(GOOD)[7:] in str(e.value)
    assert s.requests == [("12/dev-clean.tar.gz", None), ("12/dev-clean.tar.gz", f"bytes={len(bad)}-")]
    assert (tmp_path / "store/dev-clean.tar.gz.bad").read_bytes() == bytes(bad)


# --- archives that cannot be read, or that reach too far -------------------------------

def _extract(tmp_path: Path, archives: dict[str, bytes], max_gb: float = MAX_GB) -> dict[str, bool]:
    """Write ``archives`` and their checksums.json as the download stage would; extract them."""
    import json
    arch = tmp_path / "archives"
    arch.mkdir(exist_ok=True)
    for name, data in archives.items():
        (arch / name).write_bytes(data)
    (arch / "checksums.json").write_text(json.dumps({n: {"sha256": sha(d)[7:]} for n, d in archives.items()}))
    return extract_archives(arch, tmp_path / "raw", max_gb=max_gb)


def _nothing_extracted(raw: Path, archive: str) -> bool:
    return not (raw / "LibriSpeech").exists() and not list(raw.glob(".extract-*")) and \
        not (raw / ".extracted" / archive).exists()


_rng = random.Random(19)  # incompressible members, the same every run
NOISE = make_archive({f"LibriSpeech/dev-clean/1/2/1-2-{i:04d}.flac": _rng.randbytes(50_000) for i in range(4)})
CORRUPT = bytearray(NOISE)
CORRUPT[len(CORRUPT) // 2: len(CORRUPT) // 2 + 64] = bytes(64)
LONG = "LibriSpeech/dev-clean/1/2/" + "a" * 300 + ".flac"


def _bad_second_header() -> bytes:
    """A .tar.gz whose second member header is corrupt (a flipped byte in its name, so its
    checksum fails): tarfile alone takes that for the end of the archive and reads one member."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for i in range(3):
            info = tarfile.TarInfo(f"LibriSpeech/dev-clean/1/2/1-2-{i:04d}.flac")
            info.size = 1000
            tar.addfile(info, io.BytesIO(bytes([i + 1]) * 1000))
    data = bytearray(buf.getvalue())
    data[512 + 1024 + 10] ^= 0xFF  # header, 1000 bytes of data padded to 1024, then the second header
    return gzip.compress(bytes(data), mtime=0)


@pytest.mark.parametrize("data, member", [
    (b"this is not a gzip file\n" * 100, None),
    (NOISE[: len(NOISE) // 2], "LibriSpeech/dev-clean/1/2/1-2-0001.flac"),
    (bytes(CORRUPT), None),
    (_bad_second_header(), "LibriSpeech/dev-clean/1/2/1-2-0000.flac"),
    (make_archive({LONG: b"x"}), LONG[:60]),
], ids=["not-gzip", "truncated-gzip", "corrupt-gzip", "corrupt-member-header", "name-too-long"])
def test_unreadable_archive_names_the_archive(tmp_path, data, member):
    """Not gzip, a gzip cut short, compressed data overwritten (caught by gzip's CRC), a corrupt
    member header (which tarfile alone reads as the end of the archive), a member name longer
    than the file system allows: a DownloadError naming the archive (and the member where
    known), not tarfile's, gzip's or the file system's own error, and nothing extracted."""
    with pytest.raises(DownloadError) as e:
        _extract(tmp_path, {"dev-clean.tar.gz": data})
    msg = str(e.value)
    assert str(tmp_path / "archives/dev-clean.tar.gz") in msg, msg
    if member:
        assert member in msg, msg
    assert _nothing_extracted(tmp_path / "raw", "dev-clean.tar.gz")


@pytest.mark.parametrize("member", ["LibriSpeech/dev-clean/1/2/1-2-0000.flac", "LibriSpeech/dev-clean/",
                                    ".extracted/test-clean.tar.gz", "stray.txt"],
                         ids=["another-subset-file", "another-subset-dir", "forged-stamp", "outside-LibriSpeech"])
def test_archive_cannot_write_another_subsets_folder(tmp_path, member):
    """test-clean's archive carrying dev-clean's folder (or a stamp, or anything outside
    LibriSpeech/) is refused, naming the archive and the member; dev-clean, extracted from its
    own archive, is left as it was, and no stamp claims test-clean."""
    assert _extract(tmp_path, {"dev-clean.tar.gz": GOOD}) == {"dev-clean.tar.gz": True}
    flac = tmp_path / "raw/LibriSpeech/dev-clean/1/2/1-2-0000.flac"
    before = {p: p.read_bytes() for p in (tmp_path / "raw").rglob("*") if p.is_file()}
    evil = make_archive({"LibriSpeech/test-clean/3/4/3-4-0000.flac": FLAC,
                         "LibriSpeech/test-clean/3/4/3-4.trans.txt": b"3-4-0000 HELLO\n",
                         member.rstrip("/") + ("/1/2/1-2-0000.flac" if member.endswith("/") else ""): b"evil"})
    with pytest.raises(DownloadError, match="refusing") as e:
        _extract(tmp_path, {"dev-clean.tar.gz": GOOD, "test-clean.tar.gz": evil})
    msg = str(e.value)
    assert str(tmp_path / "archives/test-clean.tar.gz") in msg and member.rstrip("/") in msg, msg
    assert flac.read_bytes() == FLAC
    assert {p: p.read_bytes() for p in (tmp_path / "raw").rglob("*") if p.is_file()} == before
    assert not (tmp_path / "raw/LibriSpeech/test-clean").exists() and not (tmp_path / "raw/stray.txt").exists()


def test_archive_over_the_size_limit_is_refused_before_writing(tmp_path):
    """A member of zeros (a few hundred bytes of gzip) that would extract past
    download.max_extracted_gb: refused from the tar headers, naming the archive, the member,
    the total and the key; nothing written. Under the limit the same archive extracts."""
    zeros = make_archive({"LibriSpeech/dev-clean/1/2/1-2-0000.flac": bytes(200_000),
                          "LibriSpeech/dev-clean/1/2/1-2.trans.txt": b"1-2-0000 HELLO\n"})
    assert len(zeros) < 2_000
    with pytest.raises(DownloadError) as e:
        _extract(tmp_path, {"dev-clean.tar.gz": zeros}, max_gb=0.0001)  # 100 kB
    msg = str(e.value)
    for word in (str(tmp_path / "archives/dev-clean.tar.gz"), "LibriSpeech/dev-clean/1/2/1-2-0000.flac",
                 "200015 bytes", "200000 bytes", "0.0001 GB", "download.max_extracted_gb"):
        assert word in msg, (word, msg)
    assert _nothing_extracted(tmp_path / "raw", "dev-clean.tar.gz")
    assert _extract(tmp_path, {"dev-clean.tar.gz": zeros}, max_gb=0.001) == {"dev-clean.tar.gz": True}
    assert (tmp_path / "raw/LibriSpeech/dev-clean/1/2/1-2-0000.flac").stat().st_size == 200_000


def test_manifest_stage_applies_max_extracted_gb_from_params(tmp_path):
    """The limit as a user sets it: params.yaml's download.max_extracted_gb reaches the
    manifest stage's extraction, which fails naming the key and the archive, extracting nothing."""
    import json
    import subprocess
    import sys

    import yaml

    from conftest import REPO, TRAIN_ENV, tiny_params
    p = tiny_params()
    p["download"]["max_extracted_gb"] = 0.0001  # 100 kB
    p["mlflow"] = {"tracking_uri": f"sqlite:///{tmp_path}/mlflow.db", "artifact_root": str(tmp_path / "artifacts")}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(p, sort_keys=False))
    zeros = make_archive({"LibriSpeech/train/1/2/1-2-0000.flac": bytes(200_000)})
    arch = tmp_path / "archives"
    arch.mkdir()
    (arch / "train.tar.gz").write_bytes(zeros)
    (arch / "checksums.json").write_text(json.dumps({"train.tar.gz": {"sha256": sha(zeros)[7:]}}))
    proc = subprocess.run([sys.executable, str(REPO / "stages/manifest.py"), "--params", str(tmp_path / "params.yaml"),
                           "--dataset", "synth", "--archives", str(arch), "--raw", str(tmp_path / "raw"),
                           "--out", str(tmp_path / "manifests"), "--metrics", str(tmp_path / "manifest.json")],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300, env={**os.environ, **TRAIN_ENV})
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "download.max_extracted_gb" in proc.stderr and str(arch / "train.tar.gz") in proc.stderr, proc.stderr[-3000:]
    assert _nothing_extracted(tmp_path / "raw", "train.tar.gz") and not (tmp_path / "manifests").exists()
