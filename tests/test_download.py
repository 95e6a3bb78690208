"""`qbench data download` against archives served from 127.0.0.1: complete, resumed, corrupt, unsafe."""

from __future__ import annotations

import gzip
import hashlib
import io
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
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    s = Server()
    yield s
    s.close()


def tar_gz(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def fsdd_archive(data_dir: Path, n: int = 30) -> tuple[bytes, list[str]]:
    """A GitHub-style archive of the first `n` shared FSDD recordings."""
    files = sorted((data_dir / "fsdd" / "recordings").glob("*.wav"))[:n]
    top = f"free-spoken-digit-dataset-{dl.FSDD_TAG.lstrip('v')}"
    members = {f"{top}/README.md": b"FSDD\n", **{f"{top}/recordings/{f.name}": f.read_bytes() for f in files}}
    return tar_gz(members), [f.name for f in files]


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


def test_fsdd_download_complete_and_listed(server, data_dir, tmp_path):
    archive, names = fsdd_archive(data_dir)
    server.files[dl.FSDD_URL.rsplit("/", 1)[-1]] = archive
    dest = tmp_path / "data"
    runner = CliRunner()
    result = runner.invoke(app, ["data", "download", "fsdd", "--dest", str(dest), "--mirror", server.url])
    assert result.exit_code == 0, result.output
    recordings = dest / "fsdd" / "recordings"
    assert sorted(p.name for p in recordings.glob("*.wav")) == names
    assert (recordings / names[0]).read_bytes() == (data_dir / "fsdd" / "recordings" / names[0]).read_bytes()
    assert (dest / "fsdd" / dl.MARKER).is_file()
    assert not (dest / ".downloads").exists()  # archive removed once unpacked
    rows = {r["name"]: r for r in dl.status(dest)}
    assert rows["fsdd"]["state"] == "complete" and rows["fsdd"]["bytes"] > len(archive) // 2
    assert rows["multi30k"]["state"] == "absent"
    listing = runner.invoke(app, ["data", "list", "--dest", str(dest)])
    assert listing.exit_code == 0 and "complete" in listing.output and "fsdd" in listing.output
    # A second call finds it complete and fetches nothing.
    n = len(server.requests)
    assert (
        runner.invoke(
            app, ["data", "download", "fsdd", "--dest", str(dest), "--mirror", server.url]
        ).exit_code
        == 0
    )
    assert len(server.requests) == n


def test_multi30k_download_is_the_raw_files(server, data_dir, tmp_path):
    for f in (data_dir / "multi30k").glob("*.gz"):
        server.files[f.name] = f.read_bytes()
    dest = tmp_path / "data"
    folder = dl.download("multi30k", dest, mirror=server.url, progress=False)
    assert (folder / "val.de.gz").read_bytes() == (data_dir / "multi30k" / "val.de.gz").read_bytes()
    assert len(gzip.decompress((folder / "test_2016_flickr.en.gz").read_bytes()).splitlines()) == 1000
    assert (folder / dl.MARKER).is_file()


def test_librispeech_interrupted_download_resumes(server, tmp_path, monkeypatch):
    archive = librispeech_archive()
    md5 = hashlib.md5(archive).hexdigest()
    ds = dl.DATASETS["librispeech-dev-clean"]
    item = ds.items[0]
    monkeypatch.setitem(
        dl.DATASETS,
        ds.name,
        dl.Dataset(
            ds.name, ds.description, ds.folder, (dl.Item(item.url, item.into, md5, item.take),), ds.marker
        ),
    )
    server.files["dev-clean.tar.gz"] = archive
    server.cut_once.add("dev-clean.tar.gz")
    dest = tmp_path / "data"
    with pytest.raises(dl.DownloadError, match="run the same command again to resume"):
        dl.download("librispeech-dev-clean", dest, mirror=server.url, progress=False)
    part = dest / ".downloads" / "librispeech-dev-clean-dev-clean.tar.gz.part"
    assert part.stat().st_size == len(archive) // 2
    assert not (dest / ds.marker).exists()
    assert {r["name"]: r["state"] for r in dl.status(dest)}["librispeech-dev-clean"] == "partial"

    folder = dl.download("librispeech-dev-clean", dest, mirror=server.url, progress=False)
    assert server.requests[-1] == ("dev-clean.tar.gz", f"bytes={len(archive) // 2}-")
    assert sorted(p.name for p in folder.rglob("*.flac")) == [
        "174-50561-0000.flac", "174-50561-0001.flac", "84-121123-0000.flac", "84-121123-0001.flac",
    ]  # fmt: skip
    assert (dest / ds.marker).is_file() and not part.exists()


def test_checksum_mismatch_marks_nothing_complete(server, tmp_path):
    # The fixture is not the real dev-clean archive, so OpenSLR's published MD5 cannot match.
    server.files["dev-clean.tar.gz"] = librispeech_archive()
    dest = tmp_path / "data"
    result = CliRunner().invoke(
        app, ["data", "download", "librispeech-dev-clean", "--dest", str(dest), "--mirror", server.url]
    )
    assert result.exit_code == 2
    assert "checksum mismatch" in result.output and dl.LIBRISPEECH_MD5["dev-clean"] in result.output
    assert not (dest / "LibriSpeech" / "dev-clean").exists()
    assert not list(dest.rglob(dl.MARKER)) and not list(dest.rglob("*.part"))


def test_archive_leaving_the_destination_is_refused(server, tmp_path):
    top = "free-spoken-digit-dataset-1.0.10"
    server.files[dl.FSDD_URL.rsplit("/", 1)[-1]] = tar_gz(
        {f"{top}/recordings/0_a_0.wav": b"RIFF", f"{top}/../../escaped.txt": b"owned"}
    )
    dest = tmp_path / "deep" / "data"
    with pytest.raises(dl.DownloadError, match="unsafe archive refused"):
        dl.download("fsdd", dest, mirror=server.url, progress=False)
    assert not list(tmp_path.rglob("escaped.txt"))
    assert not (dest / "fsdd" / dl.MARKER).exists() and not (dest / "fsdd" / "recordings").exists()
    assert not list(dest.glob(".staging-*"))


def test_unknown_dataset_and_bad_mirror(tmp_path):
    runner = CliRunner()
    result = runner.invoke(app, ["data", "download", "fssd", "--dest", str(tmp_path)])
    assert result.exit_code == 2 and "unknown dataset 'fssd'" in result.output
    result = runner.invoke(app, ["data", "download", "fsdd", "--dest", str(tmp_path), "--mirror", "ftp://x"])
    assert result.exit_code == 2 and "only http and https" in result.output
