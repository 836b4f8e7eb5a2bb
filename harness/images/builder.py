"""Build a recipe's image files with qemu-img/qemu-io, fast.

`qemu-img create` costs about 8 ms; copying an empty image of the same
geometry costs well under 1 ms. So each (build, format, size, cluster size)
is created once per process into a template cache and copied from there
(only its non-zero blocks, so copies stay sparse);
so is a layer with contents (the qemu-io writes are cached along with it).
Raw layers are made sparse with truncate: a 1 TiB raw image is never copied.
"""

from __future__ import annotations

import atexit
import enum
import hashlib
import json
import os
import shutil
import threading
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.images.offline import layer_filename
from harness.images.recipe import FILE_NODE_SUFFIX, Layer, Recipe
from harness.images.tools import DEFAULT_TIMEOUT, ImageError, run
from harness.tmp import private_dir

if TYPE_CHECKING:
    from harness.builds import QemuBuild


class BackingMode(enum.Enum):
    """How `Chain.blockdev` fills the "backing" option when not given a node."""

    AUTO = "auto"  # the recipe's backing layer by node-name reference, else null
    HEADER = "header"  # leave the option out: QEMU follows the image header


AUTO = BackingMode.AUTO
FROM_HEADER = BackingMode.HEADER

Backing = str | Mapping[str, Any] | None | BackingMode


@dataclass(frozen=True)
class ChainLayer:
    """A built layer: where its file is and what it is."""

    name: str
    path: Path
    format: str
    size: int
    cluster_size: int | None
    backing: str | None
    backing_file: bool = False

    @property
    def file_node(self) -> str:
        return self.name + FILE_NODE_SUFFIX


@dataclass(frozen=True)
class Chain:
    """The files of a built recipe and the blockdev-add options to open them."""

    recipe: Recipe
    workdir: Path
    layers: Mapping[str, ChainLayer]
    build_seconds: float = 0.0

    def __getitem__(self, name: str) -> ChainLayer:
        try:
            return self.layers[name]
        except KeyError:
            raise KeyError(
                f"{self.recipe.source}: no layer {name!r} (layers: {', '.join(self.layers)})"
            ) from None

    def __iter__(self) -> Iterator[ChainLayer]:
        return iter(self.layers.values())

    def path(self, name: str) -> Path:
        return self[name].path

    def blockdev(self, layer: str, backing: Backing = AUTO) -> dict[str, Any]:
        """blockdev-add options for `layer`'s format node over its file node.

        The format node is named after the layer, the file node LAYER-file.
        `backing`: AUTO (default) references the recipe's backing layer by
        node name, or sets null if it has none; a str references that node;
        a dict nests it inline; None sets null; FROM_HEADER leaves it out.

        The file node has cache.no-flush: a flush stops there instead of becoming an
        fdatasync. Replication's answers do not depend on durability (the offline
        checks read the page cache after QEMU quits), and qcow2 flushes its file on
        every refcount/L2 dependency, so the syncs were a fifth of the suite's time.
        Flush *errors* are injected above the format node (blkdebug), unaffected.
        """
        cl = self[layer]
        opts: dict[str, Any] = {
            "driver": cl.format,
            "node-name": cl.name,
            "file": {
                "driver": "file",
                "node-name": cl.file_node,
                "filename": str(cl.path),
                "cache": {"no-flush": True},
            },
        }
        if backing is AUTO:
            backing = cl.backing
        if backing is FROM_HEADER:
            return opts
        if cl.format == "raw":
            if backing is not None:
                raise ValueError(f"layer {layer} is raw: it cannot have a backing node")
            return opts
        opts["backing"] = dict(backing) if isinstance(backing, Mapping) else backing
        return opts

    def nested(self, layer: str) -> dict[str, Any]:
        """blockdev-add options for `layer` with its whole backing chain inline."""
        below = self[layer].backing
        return self.blockdev(layer, backing=None if below is None else self.nested(below))


def _write_contents(build: QemuBuild, layer: Layer, path: Path, timeout: float) -> None:
    """One qemu-io per layer, one write command per extent."""
    argv: list[str | os.PathLike[str]] = [build.io, "-f", layer.format, path]
    for e in layer.contents:
        argv += ["-c", f"write -P {e.pattern} {e.offset} {e.length}"]
    proc = run(build, argv, timeout=timeout)
    # qemu-io exits 0 even when a command fails: count the successes.
    wrote = sum(1 for line in proc.stdout.splitlines() if line.startswith("wrote "))
    if wrote != len(layer.contents) or "failed" in proc.stdout + proc.stderr:
        raise ImageError(
            f"qemu-io writing {layer.name}'s contents into {path}: "
            f"{wrote}/{len(layer.contents)} writes done: {(proc.stdout + proc.stderr).strip()}"
        )


def _file_data_ranges(path: Path) -> list[tuple[int, int]]:
    """(offset, length) of the file's allocated ranges, from SEEK_DATA/SEEK_HOLE."""
    out: list[tuple[int, int]] = []
    with open(path, "rb") as f:
        fd, end, pos = f.fileno(), os.fstat(f.fileno()).st_size, 0
        while pos < end:
            try:
                start = os.lseek(fd, pos, os.SEEK_DATA)
            except OSError:  # ENXIO: no data after pos
                break
            stop = os.lseek(fd, start, os.SEEK_HOLE)
            out.append((start, stop - start))
            pos = stop
    return out


def _intersect(a: Sequence[tuple[int, int]], b: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    out = []
    for ao, al in a:
        for bo, bl in b:
            lo, hi = max(ao, bo), min(ao + al, bo + bl)
            if lo < hi:
                out.append((lo, hi - lo))
    return out


def _data_host_ranges(
    build: QemuBuild, path: Path, fmt: str, timeout: float
) -> list[tuple[int, int]]:
    """Where in the file the guest data clusters of `path` live."""
    proc = run(
        build, [build.img, "map", "--output=json", layer_filename(path, fmt)], timeout=timeout
    )
    return [
        (int(e["offset"]), int(e["length"]))
        for e in json.loads(proc.stdout)
        if e.get("data") and "offset" in e
    ]


@dataclass(frozen=True)
class _SparseImage:
    """A template's blocks that matter, kept in memory and written as a sparse file.

    qemu-img writes its metadata clusters out in full (a 2 MiB-cluster qcow2
    is 6 MiB, nearly all zeros); writing only the non-zero blocks costs a
    fraction of a byte-for-byte copy and keeps the copies sparse. Guest data
    clusters keep exactly the template's allocation, zeros included: a hole
    there would show as zero=true in `qemu-img map`, and the copy must map
    like the file qemu-io wrote.
    """

    size: int
    runs: tuple[tuple[int, bytes], ...]
    # The template file the runs were read from (immutable once published): the runs are
    # copied from it in the kernel, several times faster than writing them from here.
    source: Path | None = None

    BLOCK = 4096

    @classmethod
    def read(cls, path: Path, keep: Sequence[tuple[int, int]] = ()) -> _SparseImage:
        """`keep`: host (offset, length) ranges whose allocated blocks stay as they are."""
        data = memoryview(path.read_bytes())
        dense = [False] * (-(-len(data) // cls.BLOCK))
        for off, length in _intersect(_file_data_ranges(path), keep):
            for i in range(off // cls.BLOCK, -(-(off + length) // cls.BLOCK)):
                dense[i] = True
        zero = bytes(cls.BLOCK)
        runs: list[tuple[int, bytes]] = []
        start: int | None = None
        for i, off in enumerate(range(0, len(data), cls.BLOCK)):
            block = data[off : off + cls.BLOCK]
            if dense[i] or block != zero[: len(block)]:
                if start is None:
                    start = off
            elif start is not None:
                runs.append((start, bytes(data[start:off])))
                start = None
        if start is not None:
            runs.append((start, bytes(data[start:])))
        return cls(size=len(data), runs=tuple(runs), source=path)

    def write(self, dest: Path) -> None:
        fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            os.ftruncate(fd, self.size)
            if not self._copy_runs(fd):
                for off, buf in self.runs:
                    done = 0
                    while done < len(buf):
                        done += os.pwrite(fd, buf[done:], off + done)
        finally:
            os.close(fd)

    def _copy_runs(self, fd: int) -> bool:
        """copy_file_range each run from the template file; False (nothing promised about
        `fd`'s contents) where the kernel or the file systems cannot, or it changed."""
        if self.source is None or not hasattr(os, "copy_file_range"):
            return False
        try:
            src = os.open(self.source, os.O_RDONLY)
        except OSError:
            return False
        try:
            if os.fstat(src).st_size != self.size:
                return False
            for off, buf in self.runs:
                done = 0
                while done < len(buf):
                    n = os.copy_file_range(src, fd, len(buf) - done, off + done, off + done)
                    if n <= 0:
                        return False
                    done += n
            return True
        except OSError:  # EXDEV, ENOSYS, EOPNOTSUPP...: write the bytes ourselves
            return False
        finally:
            os.close(src)


# -- template cache ------------------------------------------------------------


@dataclass
class TemplateCache:
    """Empty images by geometry, created once and copied per case.

    With no directory, a private temp dir is made on first use and removed
    by clear() (also at exit). A caller-given directory may be shared
    between processes: templates are published with an atomic rename.
    """

    directory: Path | None = None
    creates: int = 0
    hits: int = 0
    _owned: bool = field(default=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _images: dict[Path, _SparseImage] = field(default_factory=dict, repr=False)

    def _dir(self) -> Path:
        if self.directory is None:
            self.directory = private_dir(f"qrc-templates-{os.getpid()}-", short=False)
            self._owned = True
        else:
            self.directory.mkdir(parents=True, exist_ok=True)
        return self.directory

    def template(self, build: QemuBuild, layer: Layer, timeout: float) -> Path:
        """The path of an image with `layer`'s format, geometry and contents.

        Contents are part of the key: a prefilled layer costs one qemu-io per
        process, then a copy like an empty one.
        """
        ident = hashlib.sha1(os.path.realpath(os.fspath(build.img)).encode()).hexdigest()[:10]
        name = f"{ident}-{layer.size}-{layer.cluster_size or 0}"
        if layer.contents:
            spec = ";".join(f"{e.offset},{e.length},{e.pattern}" for e in layer.contents)
            name += "-" + hashlib.sha1(spec.encode()).hexdigest()[:10]
        name += f".{layer.format}"
        with self._lock:
            path = self._dir() / name
            if path.exists():
                self.hits += 1
                return path
            tmp = path.with_name(f".{name}.{os.getpid()}.{uuid.uuid4().hex[:8]}")
            argv: list[str | os.PathLike[str]] = [build.img, "create", "-q", "-f", layer.format]
            if layer.cluster_size is not None:
                argv += ["-o", f"cluster_size={layer.cluster_size}"]
            argv += [tmp, str(layer.size)]
            try:
                run(build, argv, timeout=timeout)
                if layer.contents:
                    _write_contents(build, layer, tmp, timeout)
                os.replace(tmp, path)
            finally:
                tmp.unlink(missing_ok=True)
            self.creates += 1
            return path

    def copy(self, build: QemuBuild, layer: Layer, dest: Path, timeout: float) -> None:
        """Make `dest` (which must not exist) a sparse copy of `layer`'s template."""
        src = self.template(build, layer, timeout)
        with self._lock:
            image = self._images.get(src)
            if image is None:
                keep = (
                    _data_host_ranges(build, src, layer.format, timeout) if layer.contents else []
                )
                image = self._images[src] = _SparseImage.read(src, keep)
        image.write(dest)

    def clear(self) -> None:
        """Remove a private directory (a caller-given one is left alone)."""
        with self._lock:
            self._images.clear()
            if self._owned and self.directory is not None:
                shutil.rmtree(self.directory, ignore_errors=True)
                self.directory = None
                self._owned = False


_default: TemplateCache | None = None
_default_pid = 0
_default_lock = threading.Lock()


def default_template_cache() -> TemplateCache:
    """This process's cache (a forked child gets its own, never the parent's dir)."""
    global _default, _default_pid
    with _default_lock:
        if _default is None or _default_pid != os.getpid():
            _default = TemplateCache()
            _default_pid = os.getpid()
        return _default


def clear_template_cache() -> None:
    """Remove this process's template directory (call at session end; also atexit)."""
    with _default_lock:
        if _default is not None and _default_pid == os.getpid():
            _default.clear()


atexit.register(clear_template_cache)


# -- building --------------------------------------------------------------------


def _make_raw(path: Path, size: int) -> None:
    with open(path, "xb") as f:
        f.truncate(size)


def build_chain(
    build: QemuBuild,
    recipe: Recipe,
    workdir: str | os.PathLike[str],
    *,
    cache: TemplateCache | None = None,
    timeout: float = DEFAULT_TIMEOUT,
) -> Chain:
    """Create every layer of `recipe` as WORKDIR/NAME.FORMAT and write its contents.

    Files get no backing header unless the layer says backing_file = true
    (the harness passes `backing` in blockdev-add). An existing file is an
    error: two chains in one directory must not silently share a layer.
    """
    t0 = time.perf_counter()
    if cache is None:
        cache = default_template_cache()
    wd = Path(workdir)
    wd.mkdir(parents=True, exist_ok=True)
    built: dict[str, ChainLayer] = {}
    for layer in recipe.build_order():
        path = wd / f"{layer.name}.{layer.format}"
        if path.exists():
            raise ImageError(f"{path}: already exists (building {recipe.source})")
        if layer.format == "raw":
            _make_raw(path, layer.size)
        elif layer.backing_file:
            below = built[layer.backing or ""]
            argv: list[str | os.PathLike[str]] = [build.img, "create", "-q", "-f", layer.format]
            if layer.cluster_size is not None:
                argv += ["-o", f"cluster_size={layer.cluster_size}"]
            # A relative name: QEMU resolves it next to the overlay, so the
            # directory can be moved into a report as it is.
            argv += ["-b", below.path.name, "-F", below.format, path, str(layer.size)]
            run(build, argv, timeout=timeout)
        else:
            cache.copy(build, layer, path, timeout)
        built[layer.name] = ChainLayer(
            name=layer.name,
            path=path,
            format=layer.format,
            size=layer.size,
            cluster_size=layer.cluster_size,
            backing=layer.backing,
            backing_file=layer.backing_file,
        )
    for layer in recipe.build_order():
        # Raw and header-backed layers are not templates: write them here.
        if layer.contents and (layer.format == "raw" or layer.backing_file):
            _write_contents(build, layer, built[layer.name].path, timeout)
    ordered = {name: built[name] for name in recipe.names}
    return Chain(recipe=recipe, workdir=wd, layers=ordered, build_seconds=time.perf_counter() - t0)
