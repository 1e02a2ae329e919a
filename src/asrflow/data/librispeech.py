"""LibriSpeech from OpenSLR mirrors: pinned checksums, resumable fetches, a verified store.

Mirrors are base URLs in OpenSLR's layout: ``<base>/12/<subset>.tar.gz`` (audio) and
``<base>/11/librispeech-lm-norm.txt.gz`` (LM text). Verified files live in a store
(``downloads/<ds>/``) that survives re-runs, since both orchestrators delete a stage's
outputs before running it; the stage's output directory gets hard links to them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from asrflow.data.archives import DownloadError, fetch_verified, link_or_copy, parse_sums, write_checksums


@dataclass(frozen=True)
class Remote:
    filename: str
    resource: int                 # OpenSLR resource number (12: audio, 11: LM resources)
    sums: dict[str, str]          # pinned digests, {algo: hex}

    def urls(self, mirrors: Iterable[str]) -> list[str]:
        return [f"{m.rstrip('/')}/{self.resource}/{self.filename}" for m in mirrors]


def _subset(name: str, md5: str, sha256: str) -> Remote:
    return Remote(f"{name}.tar.gz", 12, {"md5": md5, "sha256": sha256})


# MD5s as OpenSLR publishes them (resources/12/md5sum.txt); SHA-256s of the same files.
SUBSETS: dict[str, Remote] = {r.filename.removesuffix(".tar.gz"): r for r in [
    _subset("dev-clean", "42e2234ba48799c1f50f24a7926300a1",
            "76f87d090650617fca0cac8f88b9416e0ebf80350acb97b343a85fa903728ab3"),
    _subset("dev-other", "c8d0bcc9cca99d4f8b62fcc847357931",
            "12661c48e8c3fe1de2c1caa4c3e135193bfb1811584f11f569dd12645aa84365"),
    _subset("test-clean", "32fa31d27d2e1cad72775fee3f4849a9",
            "39fde525e59672dc6d1551919b1478f724438a95aa55f874b576be21967e6c23"),
    _subset("test-other", "fb5a50374b501bb3bac4815ee91d3135",
            "d09c181bba5cf717b3dee7d4d592af11a3ee3a09e08ae025c5506f6ebe961c29"),
    _subset("train-clean-100", "2a93770f6d5c6c964bc36631d331a522",
            "d4ddd1d5a6ab303066f14971d768ee43278a5f2a0aa43dc716b0e64ecbbbf6e2"),
    _subset("train-clean-360", "c0e676e450a7ff2f54aeade5171606fa",
            "146a56496217e96c14334a160df97fffedd6e0a04e66b9c5af0d40be3c792ecf"),
    _subset("train-other-500", "d1a0fd59409feb2c614ce4d30c387708",
            "ddb22f27f96ec163645d53215559df6aa36515f26e01dd70798188350adcb6d2"),
]}
# The normalised LM training text (~800M words), OpenSLR resource 11.
LM_CORPUS = Remote("librispeech-lm-norm.txt.gz", 11, {"md5": "c83c64c726a1aedfe65f80aa311de402"})


def download_librispeech(subsets: Iterable[str], mirrors: list[str], store: str | Path, out_dir: str | Path,
                         lm_corpus: bool = False, checksums: dict[str, str] | None = None,
                         timeout: float = 60.0, retries: int = 3) -> dict[str, int]:
    """Fetch and verify ``subsets`` (and the LM corpus) into ``store``; link them into ``out_dir``.

    ``checksums`` maps a file name (``dev-clean.tar.gz``) or subset name to ``"md5:<hex>"``
    or ``"sha256:<hex>"``, replacing the pinned sums for that file (a private mirror with
    repacked archives; the tests' loopback server). ``out_dir/checksums.json`` records
    the sums of every file linked there. Returns bytes per file.
    """
    overrides = {k if k.endswith(".gz") else f"{k}.tar.gz": parse_sums(v) for k, v in (checksums or {}).items()}
    remotes = []
    for name in dict.fromkeys(subsets):
        if name not in SUBSETS:
            raise DownloadError(f"unknown LibriSpeech subset '{name}'; known: {', '.join(SUBSETS)}")
        remotes.append(SUBSETS[name])
    if lm_corpus:
        remotes.append(LM_CORPUS)
    store, out_dir = Path(store), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    recorded, sizes = {}, {}
    for r in remotes:
        sums = overrides.get(r.filename, r.sums)
        path = fetch_verified(r.filename, r.urls(mirrors), store, sums, timeout, retries)
        link_or_copy(path, out_dir / r.filename)
        recorded[r.filename] = sums
        sizes[r.filename] = path.stat().st_size
    write_checksums(out_dir, recorded)
    return sizes
