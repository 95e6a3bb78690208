"""`qbench data download`: fetch the public datasets from their official locations, safely.

What "safely" means here:
- a download goes to ``<file>.part`` and resumes with an HTTP Range request when rerun after an
  interruption (a server that ignores Range sends the whole file again, and that is handled);
- the MD5 sums the publisher gives (OpenSLR's md5sum.txt for LibriSpeech) are checked before
  anything is unpacked; a mismatch deletes the file and says so;
- archives unpack into a staging folder with tarfile's ``data`` filter (PEP 706), which refuses
  absolute paths, ``..`` and links that leave the destination; only a fully unpacked archive is
  moved into place;
- a marker file is written LAST, so a dataset without it (interrupted, refused, corrupt) is never
  taken as complete, and ``qbench data list`` reports it as partial.

The HTTP client is the standard library's urllib: Range requests and streaming need nothing more,
and it adds no dependency. ``--mirror URL`` replaces the official locations by ``URL/<file name>``
(tests serve a copy from 127.0.0.1).
"""

from __future__ import annotations

import hashlib
import http.client
import shutil
import tarfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

from qbench.progress import console

MARKER = ".qbench-complete"
CHUNK = 1 << 16
TIMEOUT_S = 60


class DownloadError(RuntimeError):
    """A download that could not complete; the message says what to do next."""


@dataclass(frozen=True)
class Item:
    """One file to fetch. An archive is unpacked and its member folder `take` becomes `into`;
    a plain file is stored as `into`. Both paths are relative to the destination folder."""

    url: str
    into: str
    md5: str | None = None
    take: str | None = None  # glob inside the archive; None: not an archive

    @property
    def filename(self) -> str:
        return self.url.rsplit("/", 1)[-1]


@dataclass(frozen=True)
class Dataset:
    name: str
    description: str
    folder: str  # what `data list` measures and what a recipe's data.path points at
    items: tuple[Item, ...]
    marker: str  # relative to the destination

    def complete(self, dest: Path) -> bool:
        return (dest / self.marker).is_file()


FSDD_TAG = "v1.0.10"
FSDD_URL = f"https://github.com/Jakobovski/free-spoken-digit-dataset/archive/refs/tags/{FSDD_TAG}.tar.gz"
MULTI30K_BASE = "https://raw.githubusercontent.com/multi30k/dataset/master/data/task1/raw"
LIBRISPEECH_BASE = "https://www.openslr.org/resources/12"
# From https://www.openslr.org/resources/12/md5sum.txt
LIBRISPEECH_MD5 = {
    "dev-clean": "42e2234ba48799c1f50f24a7926300a1",
    "dev-other": "c8d0bcc9cca99d4f8b62fcc847357931",
    "test-clean": "32fa31d27d2e1cad72775fee3f4849a9",
    "test-other": "fb5a50374b501bb3bac4815ee91d3135",
    "train-clean-100": "2a93770f6d5c6c964bc36631d331a522",
    "train-clean-360": "c0e676e450a7ff2f54aeade5171606fa",
    "train-other-500": "d1a0fd59409feb2c614ce4d30c387708",
}


def _datasets() -> dict[str, Dataset]:
    out = {
        "fsdd": Dataset(
            "fsdd",
            f"Free Spoken Digit Dataset {FSDD_TAG} recordings (CC BY-SA 4.0), for fsdd-digits",
            "fsdd",
            (Item(FSDD_URL, "fsdd/recordings", take="*/recordings"),),
            f"fsdd/{MARKER}",
        ),
        "multi30k": Dataset(
            "multi30k",
            "Multi30k task 1 raw text, en/de/fr: train, val, test_2016_flickr",
            "multi30k",
            tuple(
                Item(f"{MULTI30K_BASE}/{split}.{lang}.gz", f"multi30k/{split}.{lang}.gz")
                for split in ("train", "val", "test_2016_flickr")
                for lang in ("en", "de", "fr")
            ),
            f"multi30k/{MARKER}",
        ),
    }
    for subset, md5 in LIBRISPEECH_MD5.items():
        out[f"librispeech-{subset}"] = Dataset(
            f"librispeech-{subset}",
            f"LibriSpeech {subset} (CC BY 4.0), flac + transcripts",
            f"LibriSpeech/{subset}",
            (
                Item(
                    f"{LIBRISPEECH_BASE}/{subset}.tar.gz",
                    f"LibriSpeech/{subset}",
                    md5=md5,
                    take=f"LibriSpeech/{subset}",
                ),
            ),
            f"LibriSpeech/{subset}/{MARKER}",
        )
    return out


DATASETS = _datasets()


def get_dataset(name: str) -> Dataset:
    if name not in DATASETS:
        raise DownloadError(f"unknown dataset {name!r}; one of: {', '.join(DATASETS)}")
    return DATASETS[name]


# ---------------------------------------------------------------- fetching


def _progress() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        console=console,
        transient=True,
    )


def fetch(url: str, target: Path, md5: str | None = None, progress: bool = True) -> Path:
    """Download `url` to `target` through `target.part`, resuming a partial file with a Range request;
    verify `md5` when given. Returns `target`."""
    part = target.with_name(target.name + ".part")
    target.parent.mkdir(parents=True, exist_ok=True)
    have = part.stat().st_size if part.is_file() else 0
    request = urllib.request.Request(url, headers={"User-Agent": "qbench"})
    if have:
        request.add_header("Range", f"bytes={have}-")
    try:
        response = urllib.request.urlopen(request, timeout=TIMEOUT_S)  # noqa: S310 - http(s) URLs only
    except urllib.error.HTTPError as e:
        if e.code == 416 and have:  # the part is already whole (or the server's file shrank): verify below
            response = None
        else:
            raise DownloadError(f"{url}: HTTP {e.code} {e.reason}") from None
    except (urllib.error.URLError, OSError) as e:
        raise DownloadError(f"{url}: cannot connect ({getattr(e, 'reason', e)})") from None
    if response is not None:
        with response:
            if have and response.status != 206:
                have = 0  # the server ignored Range and sends everything: start over
            length = response.headers.get("Content-Length")
            total = have + int(length) if length is not None else None
            got = have
            try:
                with part.open("ab" if have else "wb") as out, _progress() as bar:
                    task = bar.add_task(target.name, total=total, completed=have, visible=progress)
                    while chunk := response.read(CHUNK):
                        out.write(chunk)
                        got += len(chunk)
                        bar.update(task, completed=got)
            except (http.client.IncompleteRead, ConnectionError, TimeoutError, OSError) as e:
                raise DownloadError(
                    f"{url}: interrupted after {got} of {total or '?'} bytes ({type(e).__name__}); "
                    f"{part} is kept: run the same command again to resume"
                ) from None
            if total is not None and got < total:
                raise DownloadError(
                    f"{url}: connection closed after {got} of {total} bytes; "
                    f"{part} is kept: run the same command again to resume"
                )
    if md5 is not None:
        digest = _md5(part)
        if digest != md5:
            part.unlink()
            raise DownloadError(
                f"{url}: checksum mismatch: MD5 {digest}, the publisher gives {md5}; "
                "the file was deleted and nothing was marked complete (try again, or another --mirror)"
            )
    part.replace(target)
    return target


def _md5(path: Path) -> str:
    digest = hashlib.md5()  # noqa: S324 - the publisher's checksum, not security
    with path.open("rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


# ---------------------------------------------------------------- unpacking


def extract(archive: Path, staging: Path) -> None:
    """Unpack a tar archive into `staging`, refusing any member that would land outside it."""
    try:
        with tarfile.open(archive) as tar:
            # PEP 706's "data" filter: no absolute paths, no "..", no links leaving the folder,
            # no device files; it raises before writing the offending member.
            tar.extractall(staging, filter="data")
    except tarfile.FilterError as e:
        raise DownloadError(f"{archive}: unsafe archive refused: {e}; nothing from it was kept") from None
    except (tarfile.TarError, EOFError, OSError) as e:
        raise DownloadError(f"{archive}: corrupt archive ({e}); delete it and download again") from None


def _place(item: Item, downloaded: Path, dest: Path) -> None:
    """Move an item's content into place (replacing what an interrupted attempt left)."""
    target = dest / item.into
    if target.exists():
        shutil.rmtree(target) if target.is_dir() else target.unlink()
    target.parent.mkdir(parents=True, exist_ok=True)
    if item.take is None:
        downloaded.replace(target)
        return
    staging = dest / f".staging-{downloaded.name}"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        try:
            extract(downloaded, staging)
        except DownloadError:
            downloaded.unlink(missing_ok=True)
            raise
        found = sorted(p for p in staging.glob(item.take) if p.is_dir())
        if len(found) != 1:
            raise DownloadError(
                f"{downloaded}: expected one folder {item.take!r} in the archive, found {len(found)}"
            )
        found[0].replace(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    downloaded.unlink()  # unpacked: the archive is no longer needed


def download(
    name: str, dest: Path, mirror: str | None = None, force: bool = False, progress: bool = True
) -> Path:
    """Fetch dataset `name` into `dest`; returns the dataset's folder. Idempotent: a complete
    dataset is left alone unless `force`; an interrupted one resumes."""
    ds = get_dataset(name)
    dest = Path(dest)
    if ds.complete(dest) and not force:
        console.print(f"{name}: already complete in {dest / ds.folder}")
        return dest / ds.folder
    (dest / ds.marker).unlink(missing_ok=True)
    downloads = dest / ".downloads"
    for item in ds.items:
        url = f"{mirror.rstrip('/')}/{item.filename}" if mirror else item.url
        if not url.startswith(("http://", "https://")):
            raise DownloadError(f"{url}: only http and https URLs are supported")
        fetched = fetch(url, downloads / f"{name}-{item.filename}", item.md5, progress=progress)
        _place(item, fetched, dest)
    marker = dest / ds.marker
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text(f"{name}\n")  # last: only now is the dataset complete
    try:
        downloads.rmdir()  # only when empty: other datasets' partial downloads stay
    except OSError:
        pass
    return dest / ds.folder


# ---------------------------------------------------------------- listing


def folder_size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.is_dir() else 0


def status(dest: Path) -> list[dict]:
    """One row per dataset: name, state (complete / partial / absent), local size, folder."""
    rows = []
    for ds in DATASETS.values():
        folder = dest / ds.folder
        parts = list((dest / ".downloads").glob(f"{ds.name}-*")) if (dest / ".downloads").is_dir() else []
        if ds.complete(dest):
            state = "complete"
        elif folder.exists() or parts:
            state = "partial"
        else:
            state = "absent"
        size = folder_size(folder) + sum(p.stat().st_size for p in parts)
        rows.append(
            {
                "name": ds.name,
                "state": state,
                "bytes": size,
                "path": str(folder),
                "description": ds.description,
            }
        )
    return rows
