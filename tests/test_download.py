"""`qbench data download` against archives served from 127.0.0.1: complete, resumed, corrupt, unsafe,
tampered (pinned checksums), http mirrors, links in archives."""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import io
import os
import socket
import tarfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from typer.testing import CliRunner

from qbench.cli.main import app
from qbench.data import download as dl


@pytest.fixture(autouse=True)
def local_only(monkeypatch):
    """Nothing in these tests may reach an address other than 127.0.0.1."""
    real = socket.getaddrinfo

    def guarded(host, *args, **kwargs):
        if host not in ("127.0.0.1", b"127.0.0.1"):
            raise AssertionError(f"test tried to reach {host!r}")
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", guarded)


class Server:
    """Serves `files` (name -> bytes) with HTTP Range support. A name in `cut_once` is cut off after
    half its bytes the first time it is requested (the connection just closes)."""

    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.cut_once: set[str] = set()
        self.requests: list[tuple[str, str | None]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep pytest output clean
                pass

            def do_GET(self):
                name = self.path.lstrip("/")
                server.requests.append((name, self.headers.get("Range")))
                data = server.files.get(name)
                if data is None:
                    self.send_error(404)
                    return
                start = 0
                if rng := self.headers.get("Range"):
                    start = int(rng.removeprefix("bytes=").split("-")[0])
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                body = data[start:]
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if name in server.cut_once:
                    server.cut_once.discard(name)
                    self.wfile.write(body[: len(body) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    s = Server()
    yield s
    s.close()


@pytest.fixture
def shared_data() -> Path:
    """The real datasets beside the project: QBENCH_DATA, else ../shared/data."""
    d = Path(os.environ.get("QBENCH_DATA") or Path(__file__).resolve().parents[2] / "shared" / "data")
    if not d.is_dir():
        pytest.skip(f"no shared data at {d} (set QBENCH_DATA)")
    return d


def cli(*args):
    return CliRunner().invoke(app, ["data", "download", *map(str, args), "--no-progress"])


def one_error_line(result) -> str:
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    assert "Traceback" not in result.output
    return lines[0]


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def tar_gz(members: dict[str, bytes], symlinks: dict[str, str] | None = None) -> bytes:
    """A gzipped tar of `members` (name -> bytes) and `symlinks` (name -> link target)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for name, target in (symlinks or {}).items():
            info = tarfile.TarInfo(name)
            info.type = tarfile.SYMTYPE
            info.linkname = target
            tar.addfile(info)
    return buf.getvalue()


FSDD_TOP = f"free-spoken-digit-dataset-{dl.FSDD_TAG.lstrip('v')}"
FSDD_FILE = dl.FSDD_URL.rsplit("/", 1)[-1]


def recordings(n: int = 6) -> dict[str, bytes]:
    """`n` small FSDD-like recordings (8 kHz mono wav), name -> bytes."""
    rng = np.random.default_rng(0)
    out = {}
    for i in range(n):
        buf = io.BytesIO()
        sf.write(buf, (rng.standard_normal(400) * 0.1).astype(np.float32), 8000, format="WAV")
        out[f"{i % 10}_test_{i // 10}.wav"] = buf.getvalue()
    return out


def fsdd_archive(files: dict[str, bytes], symlinks: dict[str, str] | None = None) -> bytes:
    """A GitHub-style tag archive holding `files` in recordings/."""
    members = {
        f"{FSDD_TOP}/README.md": b"FSDD\n",
        **{f"{FSDD_TOP}/recordings/{n}": d for n, d in files.items()},
    }
    links = {f"{FSDD_TOP}/recordings/{n}": t for n, t in (symlinks or {}).items()}
    return tar_gz(members, links)


@pytest.fixture
def pin_fsdd(monkeypatch):
    """Pin FSDD's manifest to the test's own recordings instead of the committed 2500."""

    def pin(files: dict[str, bytes]) -> None:
        manifest = {name: sha256(data) for name, data in files.items()}
        monkeypatch.setattr(dl, "pinned_manifest", lambda name: dict(manifest))

    return pin


def multi30k_files() -> dict[str, bytes]:
    return {
        item.filename: gzip.compress(f"sentence {i} of {item.filename}\n".encode(), mtime=0)
        for i, item in enumerate(dl.DATASETS["multi30k"].items)
    }


@pytest.fixture
def pin_multi30k(monkeypatch):
    """Pin Multi30k's items to the test's own small files."""

    def pin(files: dict[str, bytes]) -> None:
        ds = dl.DATASETS["multi30k"]
        items = tuple(dataclasses.replace(i, sha256=sha256(files[i.filename])) for i in ds.items)
        monkeypatch.setitem(dl.DATASETS, "multi30k", dataclasses.replace(ds, items=items))

    return pin


def nothing_complete(dest: Path) -> bool:
    return not list(dest.rglob(dl.MARKER)) and not list(dest.rglob(".staging-*"))


def librispeech_archive(subset: str = "dev-clean") -> bytes:
    """LibriSpeech layout: LibriSpeech/<subset>/<speaker>/<chapter>/*.flac + .trans.txt."""
    rng = np.random.default_rng(0)
    members = {}
    for speaker, chapter in (("84", "121123"), ("174", "50561")):
        lines = []
        for i in range(2):
            uid = f"{speaker}-{chapter}-{i:04d}"
            buf = io.BytesIO()
            sf.write(buf, (rng.standard_normal(4000) * 0.1).astype(np.float32), 16000, format="FLAC")
            members[f"LibriSpeech/{subset}/{speaker}/{chapter}/{uid}.flac"] = buf.getvalue()
            lines.append(f"{uid} HELLO WORLD NUMBER {i}")
        members[f"LibriSpeech/{subset}/{speaker}/{chapter}/{speaker}-{chapter}.trans.txt"] = (
            "\n".join(lines) + "\n"
        ).encode()
    return tar_gz(members)


def test_fsdd_download_complete_and_listed(server, pin_fsdd, tmp_path):
    files = recordings()
    pin_fsdd(files)
    archive = fsdd_archive(files)
    server.files[FSDD_FILE] = archive
    dest = tmp_path / "data"
    runner = CliRunner()
    result = runner.invoke(
        app, ["data", "download", "fsdd", "--dest", str(dest), "--insecure-mirror", server.url]
    )
    assert result.exit_code == 0, result.output
    assert "not covered" not in result.output
    folder = dest / "fsdd" / "recordings"
    assert sorted(p.name for p in folder.glob("*.wav")) == sorted(files)
    assert all((folder / name).read_bytes() == data for name, data in files.items())
    assert (dest / "fsdd" / dl.MARKER).is_file()
    assert not (dest / ".downloads").exists()  # archive removed once unpacked
    rows = {r["name"]: r for r in dl.status(dest)}
    assert rows["fsdd"]["state"] == "complete" and rows["fsdd"]["bytes"] > len(archive) // 2
    assert rows["multi30k"]["state"] == "absent"
    listing = runner.invoke(app, ["data", "list", "--dest", str(dest)])
    assert listing.exit_code == 0 and "complete" in listing.output and "fsdd" in listing.output
    # A second call finds it complete and fetches nothing.
    n = len(server.requests)
    assert cli("fsdd", "--dest", dest, "--insecure-mirror", server.url).exit_code == 0
    assert len(server.requests) == n


def test_fsdd_recordings_the_manifest_does_not_cover_are_kept_with_one_line(server, pin_fsdd, tmp_path):
    files = recordings(6)
    pin_fsdd(dict(list(files.items())[:4]))  # as upstream's sixth speaker is not in the committed one
    server.files[FSDD_FILE] = fsdd_archive(files)
    dest = tmp_path / "data"
    result = cli("fsdd", "--dest", dest, "--insecure-mirror", server.url)
    assert result.exit_code == 0, result.output
    assert result.output.count("not covered by the pinned manifest") == 1
    assert "fsdd: 2 files in fsdd/recordings are not covered" in result.output
    assert sorted(p.name for p in (dest / "fsdd" / "recordings").iterdir()) == sorted(files)
    assert (dest / "fsdd" / dl.MARKER).is_file()


@pytest.mark.parametrize("how", ["tampered", "missing"])
def test_fsdd_tampered_or_missing_recording_is_refused(server, pin_fsdd, tmp_path, how):
    files = recordings(6)
    pin_fsdd(files)
    served = dict(files)
    if how == "tampered":
        served["3_test_0.wav"] = served["3_test_0.wav"][:-2] + b"\x00\x01"
    else:
        del served["3_test_0.wav"]
    server.files[FSDD_FILE] = fsdd_archive(served)
    dest = tmp_path / "data"
    line = one_error_line(cli("fsdd", "--dest", dest, "--insecure-mirror", server.url))
    assert "fsdd/recordings/3_test_0.wav" in line
    assert ("checksum mismatch" if how == "tampered" else "missing") in line
    assert nothing_complete(dest)
    assert not (dest / "fsdd" / "recordings").exists()
    assert not list((dest / ".downloads").glob("*"))  # the refused archive is not kept
    assert {r["name"]: r["state"] for r in dl.status(dest)}["fsdd"] != "complete"


def test_multi30k_download_is_the_raw_files(server, shared_data, tmp_path):
    for f in (shared_data / "multi30k").glob("*.gz"):
        server.files[f.name] = f.read_bytes()
    dest = tmp_path / "data"
    folder = dl.download("multi30k", dest, mirror=server.url, progress=False, insecure_mirror=True)
    assert (folder / "val.de.gz").read_bytes() == (shared_data / "multi30k" / "val.de.gz").read_bytes()
    assert len(gzip.decompress((folder / "test_2016_flickr.en.gz").read_bytes()).splitlines()) == 1000
    assert (folder / dl.MARKER).is_file()


def test_multi30k_pinned_files_complete(server, pin_multi30k, tmp_path):
    files = multi30k_files()
    pin_multi30k(files)
    server.files.update(files)
    dest = tmp_path / "data"
    result = cli("multi30k", "--dest", dest, "--insecure-mirror", server.url)
    assert result.exit_code == 0, result.output
    assert all((dest / "multi30k" / name).read_bytes() == data for name, data in files.items())
    assert (dest / "multi30k" / dl.MARKER).is_file()


def test_multi30k_tampered_file_is_refused(server, pin_multi30k, tmp_path):
    files = multi30k_files()
    pin_multi30k(files)
    server.files.update(files)
    server.files["val.de.gz"] = gzip.compress(b"ein anderer Satz\n", mtime=0)
    dest = tmp_path / "data"
    line = one_error_line(cli("multi30k", "--dest", dest, "--insecure-mirror", server.url))
    assert "val.de.gz" in line and "checksum mismatch" in line
    assert sha256(files["val.de.gz"]) in line
    assert nothing_complete(dest)
    assert not (dest / "multi30k" / "val.de.gz").exists()
    assert not list(dest.rglob("*.part"))


def test_the_real_multi30k_files_do_not_match_other_bytes(server, tmp_path):
    """Without any patching: the committed pins refuse files that are not the upstream ones."""
    server.files.update(multi30k_files())
    dest = tmp_path / "data"
    line = one_error_line(cli("multi30k", "--dest", dest, "--insecure-mirror", server.url))
    assert "train.en.gz" in line and dl.MULTI30K_SHA256["train.en.gz"] in line
    assert nothing_complete(dest)


@pytest.mark.parametrize("scheme", ["http", "HTTP"])
def test_an_http_mirror_needs_insecure_mirror(server, tmp_path, scheme):
    server.files[FSDD_FILE] = fsdd_archive(recordings())
    dest = tmp_path / "data"
    mirror = server.url.replace("http", scheme, 1) + "/"
    line = one_error_line(cli("fsdd", "--dest", dest, "--mirror", mirror))
    assert "--insecure-mirror" in line and "https" in line
    assert server.requests == [] and not dest.exists()


def test_mirror_and_insecure_mirror_together_or_not_http(tmp_path):
    dest = tmp_path / "data"
    line = one_error_line(
        cli("fsdd", "--dest", dest, "--mirror", "https://a", "--insecure-mirror", "http://b")
    )
    assert "--mirror" in line and "--insecure-mirror" in line
    for flag in ("--mirror", "--insecure-mirror"):
        assert "only http and https" in one_error_line(cli("fsdd", "--dest", dest, flag, "ftp://x"))
    assert not dest.exists()


def test_an_https_mirror_is_accepted():
    """https passes the check (the request itself is not made here: nothing may leave 127.0.0.1)."""
    assert dl.check_mirror("https://example.org/copy/") == "https://example.org/copy"
    assert dl.check_mirror("http://127.0.0.1:8000", insecure=True) == "http://127.0.0.1:8000"


@pytest.mark.parametrize("target", ["9_test_9.wav", "0_test_0.wav"], ids=["dangling", "inside"])
def test_a_symlink_in_the_archive_is_refused(server, pin_fsdd, tmp_path, target):
    files = recordings(2)
    pin_fsdd(files)
    server.files[FSDD_FILE] = fsdd_archive(files, symlinks={"5_test_0.wav": target})
    dest = tmp_path / "data"
    line = one_error_line(cli("fsdd", "--dest", dest, "--insecure-mirror", server.url))
    assert "unsafe archive refused" in line and "5_test_0.wav" in line and "symbolic link" in line
    assert nothing_complete(dest)
    assert not (dest / "fsdd" / "recordings").exists()
    assert not any(p.is_symlink() for p in tmp_path.rglob("*"))


def test_a_hard_link_to_a_missing_member_is_refused(server, pin_fsdd, tmp_path):
    files = recordings(2)
    pin_fsdd(files)
    buf = io.BytesIO()
    with tarfile.open(fileobj=io.BytesIO(fsdd_archive(files)), mode="r:gz") as src:
        with tarfile.open(fileobj=buf, mode="w:gz") as tar:
            for m in src.getmembers():
                tar.addfile(m, src.extractfile(m) if m.isfile() else None)
            link = tarfile.TarInfo(f"{FSDD_TOP}/recordings/5_test_0.wav")
            link.type, link.linkname = tarfile.LNKTYPE, f"{FSDD_TOP}/recordings/missing.wav"
            tar.addfile(link)
    server.files[FSDD_FILE] = buf.getvalue()
    dest = tmp_path / "data"
    line = one_error_line(cli("fsdd", "--dest", dest, "--insecure-mirror", server.url))
    assert "missing.wav" in line
    assert nothing_complete(dest)


def test_every_dataset_is_pinned():
    for ds in dl.DATASETS.values():
        for item in ds.items:
            assert item.md5 or item.sha256 or item.manifest, item
    assert dl.DATASETS["fsdd"].items[0].manifest == dl.FSDD_MANIFEST
    with pytest.raises(ValueError, match="nothing pinned"):
        dl.Item("https://example.org/x.gz", "x.gz")


def test_the_committed_fsdd_manifest_matches_the_shared_recordings(shared_data):
    folder = shared_data / "fsdd" / "recordings"
    pinned = dl.pinned_manifest(dl.FSDD_MANIFEST)
    assert len(pinned) == 2500 and len({n.split("_")[1] for n in pinned}) == 5
    text = (Path(dl.__file__).parent / "checksums" / dl.FSDD_MANIFEST).read_text()
    assert text.splitlines() == sorted(text.splitlines(), key=lambda line: line.split("  ", 1)[1])
    assert sorted(p.name for p in folder.glob("*.wav")) == sorted(pinned)
    assert dl.verify_manifest(folder, pinned, "fsdd/recordings") == 0


def test_the_pinned_multi30k_sums_match_the_shared_copies(shared_data):
    for item in dl.DATASETS["multi30k"].items:
        assert item.sha256 == dl.file_digest(shared_data / "multi30k" / item.filename), item.filename


def test_librispeech_interrupted_download_resumes(server, tmp_path, monkeypatch):
    archive = librispeech_archive()
    md5 = hashlib.md5(archive).hexdigest()
    ds = dl.DATASETS["librispeech-dev-clean"]
    item = ds.items[0]
    monkeypatch.setitem(
        dl.DATASETS,
        ds.name,
        dataclasses.replace(ds, items=(dataclasses.replace(item, md5=md5),)),
    )
    server.files["dev-clean.tar.gz"] = archive
    server.cut_once.add("dev-clean.tar.gz")
    dest = tmp_path / "data"
    with pytest.raises(dl.DownloadError, match="run the same command again to resume"):
        dl.download("librispeech-dev-clean", dest, mirror=server.url, progress=False, insecure_mirror=True)
    part = dest / ".downloads" / "librispeech-dev-clean-dev-clean.tar.gz.part"
    assert part.stat().st_size == len(archive) // 2
    assert not (dest / ds.marker).exists()
    assert {r["name"]: r["state"] for r in dl.status(dest)}["librispeech-dev-clean"] == "partial"

    folder = dl.download(
        "librispeech-dev-clean", dest, mirror=server.url, progress=False, insecure_mirror=True
    )
    assert server.requests[-1] == ("dev-clean.tar.gz", f"bytes={len(archive) // 2}-")
    assert sorted(p.name for p in folder.rglob("*.flac")) == [
        "174-50561-0000.flac", "174-50561-0001.flac", "84-121123-0000.flac", "84-121123-0001.flac",
    ]  # fmt: skip
    assert (dest / ds.marker).is_file() and not part.exists()


def test_checksum_mismatch_marks_nothing_complete(server, tmp_path):
    # The fixture is not the real dev-clean archive, so OpenSLR's published MD5 cannot match.
    server.files["dev-clean.tar.gz"] = librispeech_archive()
    dest = tmp_path / "data"
    line = one_error_line(cli("librispeech-dev-clean", "--dest", dest, "--insecure-mirror", server.url))
    assert "checksum mismatch" in line and dl.LIBRISPEECH_MD5["dev-clean"] in line
    assert not (dest / "LibriSpeech" / "dev-clean").exists()
    assert not list(dest.rglob(dl.MARKER)) and not list(dest.rglob("*.part"))


def test_archive_leaving_the_destination_is_refused(server, tmp_path):
    top = "free-spoken-digit-dataset-1.0.10"
    server.files[FSDD_FILE] = tar_gz(
        {f"{top}/recordings/0_a_0.wav": b"RIFF", f"{top}/../../escaped.txt": b"owned"}
    )
    dest = tmp_path / "deep" / "data"
    with pytest.raises(dl.DownloadError, match="unsafe archive refused"):
        dl.download("fsdd", dest, mirror=server.url, progress=False, insecure_mirror=True)
    assert not list(tmp_path.rglob("escaped.txt"))
    assert not (dest / "fsdd" / dl.MARKER).exists() and not (dest / "fsdd" / "recordings").exists()
    assert not list(dest.glob(".staging-*"))


def test_unknown_dataset(tmp_path):
    assert "unknown dataset 'fssd'" in one_error_line(cli("fssd", "--dest", tmp_path))
