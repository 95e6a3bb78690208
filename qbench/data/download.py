"""`qbench data download`: fetch the public datasets from their official locations, safely.

What "safely" means here:
- a download goes to ``<file>.part`` and resumes with an HTTP Range request when rerun after an
  interruption (a server that ignores Range sends the whole file again, and that is handled);
- every dataset is verified against checksums pinned here, before anything is unpacked or placed:
  the MD5 sums the publisher gives (OpenSLR's md5sum.txt for LibriSpeech), the SHA-256 of each
  Multi30k file, and for FSDD a content manifest (``checksums/fsdd-v1.0.10.sha256``: the SHA-256
  of every extracted ``recordings/*.wav``, in ``sha256sum`` format, so ``sha256sum -c`` run in
  ``fsdd/recordings`` checks a copy by hand). A mismatch deletes the download, or refuses the
  unpacked archive, names the file and marks nothing complete;
- a manifest is complete for what it pins, not for what the archive may add: every pinned file must
  be present with its digest; files the manifest does not cover are kept, unverified, and one line
  says how many (upstream FSDD v1.0.10 has a sixth speaker, "lucas", whose 500 recordings could not
  be pinned offline: a real download prints "fsdd: 500 files in fsdd/recordings are not covered
  by the pinned manifest ... (kept, unverified)");
- archives unpack into a staging folder with tarfile's ``data`` filter (PEP 706), which refuses
  absolute paths, ``..`` and links that leave the destination; symbolic links are refused too
  (even inside the folder: a dangling one would pass for a file); only a fully unpacked and verified
  archive is moved into place;
- a marker file is written LAST, so a dataset without it (interrupted, refused, corrupt) is never
  taken as complete, and ``qbench data list`` reports it as partial.

The HTTP client is the standard library's urllib: Range requests and streaming need nothing more,
and it adds no dependency. ``mirror`` replaces the official locations by ``URL/<file name>``; it
must be https unless ``insecure_mirror`` (``--insecure-mirror``, for a copy served on 127.0.0.1 as
the tests do). Checksums are verified either way: they, not the transport, make a mirror safe.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import http.client
import importlib.resources
import shutil
import tarfile
import urllib.error
import urllib.parse
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
    a plain file is stored as `into`. Both paths are relative to the destination folder.

    Every item is pinned: `md5` (a publisher's sum) or `sha256` of the downloaded file, checked
    before it is unpacked or placed, and/or (archives only) `manifest`, the name of a file in
    ``qbench/data/checksums/`` giving the SHA-256 of each file of the unpacked folder."""

    url: str
    into: str
    md5: str | None = None
    take: str | None = None  # glob inside the archive; None: not an archive
    sha256: str | None = None
    manifest: str | None = None

    def __post_init__(self) -> None:
        if self.md5 is None and self.sha256 is None and self.manifest is None:
            raise ValueError(f"{self.url}: nothing pinned (md5, sha256 or manifest)")
        if self.manifest is not None and self.take is None:
            raise ValueError(f"{self.url}: a manifest pins an unpacked archive's files; take is unset")

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
# Why a content manifest for FSDD and not the archive's checksum: the upstream is a GitHub tag
# tarball, generated on request, whose bytes GitHub does not promise to keep stable (they changed
# for a while in 2023 with git-archive's compression), and which could not be fetched offline to
# pin. What is stable, and what a run reads, is the recordings: pinning each one's SHA-256 verifies
# exactly that, from whichever archive or mirror it came.
FSDD_MANIFEST = f"fsdd-{FSDD_TAG}.sha256"
MULTI30K_BASE = "https://raw.githubusercontent.com/multi30k/dataset/master/data/task1/raw"
# SHA-256 of the upstream files (task1/raw), computed from byte copies of them.
MULTI30K_SHA256 = {
    "train.en.gz": "d79cfa999dd4c51d2cb42499b6796d5a882c3a8a961923c25a898c90f8bbd56f",
    "train.de.gz": "726e39b2fa9eb9ffb6dc763fb35a179f80fae06ffc5d28b6ace5faa883de28a6",
    "train.fr.gz": "622e75069e9f4c577425c4f277116ce66e63a2401c0a2312d90073cb12379a3c",
    "val.en.gz": "14f7d25ddd868909a9213e361768460edcacdd6ab9d1e77b92560dc10c10dc28",
    "val.de.gz": "f0cba2f995189cf5770f29a8a9a537a3ad3f51657ad873405082ff6863a5e75a",
    "val.fr.gz": "ca3106f1a72390591d25f6c45cb4cd39dec4cd3f123e099748a3ce5256c160e9",
    "test_2016_flickr.en.gz": "611d361c6334bc7246101d48097c13cf5c4413c5befc793cc629934359d532d9",
    "test_2016_flickr.de.gz": "9204244e408ccb38d2a55cfcd344df15005fc42a07a6e55ca6c52b6ababb8cc8",
    "test_2016_flickr.fr.gz": "6d326e188d259fb1d04ac19eae3af956559b3a0b93d7635e56c90987c40c8b90",
}
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
            (Item(FSDD_URL, "fsdd/recordings", take="*/recordings", manifest=FSDD_MANIFEST),),
            f"fsdd/{MARKER}",
        ),
        "multi30k": Dataset(
            "multi30k",
            "Multi30k task 1 raw text, en/de/fr: train, val, test_2016_flickr",
            "multi30k",
            tuple(
                Item(
                    f"{MULTI30K_BASE}/{split}.{lang}.gz",
                    f"multi30k/{split}.{lang}.gz",
                    sha256=MULTI30K_SHA256[f"{split}.{lang}.gz"],
                )
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


def pinned_manifest(name: str) -> dict[str, str]:
    """A manifest of ``qbench/data/checksums/``: file name (relative to the unpacked folder) -> SHA-256."""
    return dict(_read_manifest(name))


@functools.cache
def _read_manifest(name: str) -> tuple[tuple[str, str], ...]:
    text = importlib.resources.files("qbench.data").joinpath("checksums", name).read_text("utf-8")
    rows = []
    for line in text.splitlines():
        if line.strip():
            digest, file = line.split(maxsplit=1)
            rows.append((file.lstrip("*"), digest.lower()))  # "*name": sha256sum's binary mode
    return tuple(rows)


def fetch(
    url: str,
    target: Path,
    md5: str | None = None,
    progress: bool = True,
    sha256: str | None = None,
) -> Path:
    """Download `url` to `target` through `target.part`, resuming a partial file with a Range request;
    verify `md5` and `sha256` when given, before the file takes its name. Returns `target`."""
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
    for algo, label, expected, source in (
        ("md5", "MD5", md5, "the publisher gives"),
        ("sha256", "SHA-256", sha256, "pinned"),
    ):
        if expected is None:
            continue
        digest = file_digest(part, algo)
        if digest != expected.lower():
            part.unlink()
            raise DownloadError(
                f"{url}: checksum mismatch: {label} {digest}, {source} {expected}; "
                "the file was deleted and nothing was marked complete (try again, or another --mirror)"
            )
    part.replace(target)
    return target


def file_digest(path: Path, algo: str = "sha256") -> str:
    # MD5 only for a publisher's sums (LibriSpeech); what qbench pins itself is SHA-256.
    digest = hashlib.new(algo, usedforsecurity=algo != "md5")
    with path.open("rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


# ---------------------------------------------------------------- unpacking


class SymlinkRefused(tarfile.FilterError):
    def __init__(self, member: tarfile.TarInfo):
        self.tarinfo = member
        super().__init__(
            f"{member.name!r} is a symbolic link (to {member.linkname!r}); datasets are unpacked without links"
        )


def _no_symlinks(member: tarfile.TarInfo, dest: str) -> tarfile.TarInfo:
    """tarfile's "data" filter, and no symbolic links at all: the filter lets a link that stays inside
    the folder through, and one whose target is missing would pass for a file of a complete dataset."""
    filtered = tarfile.data_filter(member, dest)
    if filtered.issym():
        raise SymlinkRefused(member)
    return filtered


def extract(archive: Path, staging: Path) -> None:
    """Unpack a tar archive into `staging`, refusing any member that would land outside it, any
    symbolic link and any device file."""
    try:
        with tarfile.open(archive) as tar:
            # PEP 706's "data" filter: no absolute paths, no "..", no links leaving the folder,
            # no device files; it raises before writing the offending member.
            tar.extractall(staging, filter=_no_symlinks)
    except tarfile.FilterError as e:
        raise DownloadError(f"{archive}: unsafe archive refused: {e}; nothing from it was kept") from None
    except KeyError as e:  # tarfile: a hard link to a member that is not in the archive
        raise DownloadError(f"{archive}: corrupt archive ({e}); nothing from it was kept") from None
    except (tarfile.TarError, EOFError, OSError) as e:
        reason = str(e).splitlines()[0].rstrip(":")  # tarfile lists every method it tried, one per line
        raise DownloadError(f"{archive}: corrupt archive ({reason}); delete it and download again") from None


def verify_manifest(folder: Path, pinned: dict[str, str], shown_as: str) -> int:
    """Check that every file `pinned` names is in `folder` with its SHA-256; raise DownloadError naming
    the first one missing or different (`shown_as`: the folder's name for the message). Returns how
    many files of `folder` the manifest does not cover."""
    missing = sorted(name for name in pinned if not (folder / name).is_file())
    if missing:
        more = f" (and {len(missing) - 1} more pinned files)" if len(missing) > 1 else ""
        raise DownloadError(f"{shown_as}/{missing[0]}: a pinned file is missing from the archive{more}")
    wrong = [name for name in sorted(pinned) if file_digest(folder / name) != pinned[name].lower()]
    if wrong:
        more = f" (and {len(wrong) - 1} more files)" if len(wrong) > 1 else ""
        raise DownloadError(
            f"{shown_as}/{wrong[0]}: checksum mismatch: SHA-256 {file_digest(folder / wrong[0])}, "
            f"pinned {pinned[wrong[0]]}{more}"
        )
    present = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}
    return len(present - pinned.keys())


def _place(item: Item, downloaded: Path, dest: Path, name: str) -> None:
    """Verify an item's content and move it into place (replacing what an earlier attempt left)."""
    target = dest / item.into
    target.parent.mkdir(parents=True, exist_ok=True)
    if item.take is None:
        _remove(target)
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
            downloaded.unlink(missing_ok=True)  # not the dataset's archive: nothing to resume
            raise DownloadError(
                f"{downloaded}: expected one folder {item.take!r} in the archive, found {len(found)}; "
                "it was deleted"
            )
        if item.manifest is not None:
            try:
                unpinned = verify_manifest(found[0], pinned_manifest(item.manifest), item.into)
            except DownloadError as e:
                downloaded.unlink(missing_ok=True)
                raise DownloadError(
                    f"{e}; {name} refused: the archive was deleted and nothing was marked complete"
                ) from None
            if unpinned:
                console.print(
                    f"{name}: {unpinned} files in {item.into} are not covered by the pinned manifest "
                    f"{item.manifest} (kept, unverified)",
                    highlight=False,
                )
        _remove(target)
        found[0].replace(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    downloaded.unlink()  # unpacked: the archive is no longer needed


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def check_mirror(mirror: str, insecure: bool = False) -> str:
    """`mirror` without its trailing slash, if its scheme is allowed: https, or http when `insecure`."""
    parts = urllib.parse.urlsplit(mirror)
    scheme = parts.scheme.lower()
    if not parts.netloc or scheme not in ("http", "https"):
        raise DownloadError(f"{mirror}: not an http(s) URL; only http and https URLs are supported")
    if scheme == "http" and not insecure:
        raise DownloadError(
            f"--mirror {mirror}: plain http refused (https only); for a copy you trust, e.g. one "
            "served on 127.0.0.1, use --insecure-mirror URL (checksums are verified either way)"
        )
    return mirror.rstrip("/")


def _folders_between(dest: Path, targets: list[Path]) -> list[Path]:
    """The folders from each target's parent up to `dest` (included), deepest first."""
    out: list[Path] = []
    for target in targets:
        folder = target.parent
        while folder != dest.parent and folder not in out:
            out.append(folder)
            if folder == dest:
                break
            folder = folder.parent
    return sorted(out, key=lambda f: -len(f.parts))


def download(
    name: str,
    dest: Path,
    mirror: str | None = None,
    force: bool = False,
    progress: bool = True,
    insecure_mirror: bool = False,
) -> Path:
    """Fetch dataset `name` into `dest`; returns the dataset's folder. Idempotent: a complete
    dataset is left alone unless `force`; an interrupted one resumes. `mirror` must be https
    unless `insecure_mirror`; every file is verified against its pinned checksum either way."""
    ds = get_dataset(name)
    if mirror is not None:
        mirror = check_mirror(mirror, insecure_mirror)
    dest = Path(dest)
    if ds.complete(dest) and not force:
        console.print(f"{name}: already complete in {dest / ds.folder}")
        return dest / ds.folder
    (dest / ds.marker).unlink(missing_ok=True)
    downloads = dest / ".downloads"
    folders = [downloads, *_folders_between(dest, [dest / item.into for item in ds.items])]
    new = [f for f in folders if not f.exists()]
    try:
        for item in ds.items:
            url = f"{mirror}/{item.filename}" if mirror else item.url
            fetched = fetch(
                url, downloads / f"{name}-{item.filename}", item.md5, progress=progress, sha256=item.sha256
            )
            _place(item, fetched, dest, name)
    except DownloadError:
        for folder in new:  # deepest first; a kept partial download keeps its folder
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise
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
