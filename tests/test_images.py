"""Image recipes, the builder and offline inspection, against real qemu-img/qemu-io.

Every QEMU-backed test runs once per installed build (7.2 on PATH, the pinned
10.0), because the cases rely on both producing the same files.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from harness.builds import QemuBuild, known_builds
from harness.errors import RecipeError
from harness.images import (
    AUTO,
    FROM_HEADER,
    Chain,
    ChainLayer,
    ImageCorrupt,
    ImageError,
    MapExtent,
    Recipe,
    TemplateCache,
    allocated,
    allocation_map,
    build_chain,
    check_image,
    clear_template_cache,
    coalesce,
    default_template_cache,
    image_info,
    load_recipe,
    parse_size,
    standard_recipes,
)
from harness.images.tools import run
from harness.topology.standard import secondary_chain

ROOT = Path(__file__).resolve().parents[1]
BAD = ROOT / "tests" / "data" / "bad-recipes"
BUILDS = known_builds(ROOT)
with_builds = pytest.mark.parametrize("build", BUILDS, ids=[b.label for b in BUILDS])
needs_qemu = pytest.mark.needs_qemu

STANDARD = {
    "secondary",
    "secondary-512",
    "secondary-2m",
    "secondary-1t",
    "secondary-1m",
    "secondary-mixed",
    "secondary-prefilled",
    "primary-child",
    "length-mismatch-active",
    "length-mismatch-hidden",
    "length-mismatch-secondary",
    "active-vmdk",
    "hidden-qed",
}
K, M, G, T = 1 << 10, 1 << 20, 1 << 30, 1 << 40

# Each bad recipe and the one line it must be refused with (after "<path>: ").
BAD_RECIPES = {
    "backing-file-without-backing.toml": (
        "layers.secondary.backing_file: needs 'backing' (the layer to name)"
    ),
    "backing-loop.toml": "layers.a.backing: backing loop a -> b -> a",
    "backing-self-loop.toml": "layers.a.backing: backing loop a -> a",
    "bad-layer-name.toml": (
        "layers.1st: layer name must be a QEMU node name: a letter, then letters, digits, "
        "'-' or '_', at most 26 characters"
    ),
    "bad-suffix.toml": (
        "layers.secondary.size: bad size '64X': expected bytes or a number with suffix "
        "k, K, M, G or T"
    ),
    "cluster-for-raw.toml": "layers.secondary.cluster_size: not supported for format raw",
    "cluster-not-power-of-two.toml": (
        "layers.secondary.cluster_size: must be a power of two, got 49152"
    ),
    "cluster-qed-too-small.toml": (
        "layers.secondary.cluster_size: must be within [4k, 2M] for qed, got 512"
    ),
    "cluster-too-large.toml": (
        "layers.secondary.cluster_size: must be within [512, 2M] for qcow2, got 4M"
    ),
    "cluster-too-small.toml": (
        "layers.secondary.cluster_size: must be within [512, 2M] for qcow2, got 256"
    ),
    "contents-negative-offset.toml": (
        "layers.secondary.contents[0].offset: must not be negative, got -4096"
    ),
    "contents-overlap.toml": (
        "layers.secondary.contents[2]: [524288, 589824) overlaps contents[0] [0, 1048576)"
    ),
    "contents-past-end.toml": (
        "layers.secondary.contents[0]: extent [66060288, 68157440) ends past the layer's "
        "size 67108864"
    ),
    "contents-zero-length.toml": "layers.secondary.contents[0].length: must be positive, got 0",
    "equal-lengths-not-bool.toml": "equal_lengths: must be true or false, got string",
    "lengths-differ.toml": (
        "layers.hidden.size: 33554432 differs from its backing layer secondary's 67108864 "
        "(set equal_lengths = false to allow)"
    ),
    "malformed.toml": "invalid TOML: Illegal character '\\n' (at line 1, column 40)",
    "missing-size.toml": "layers.secondary.size: missing",
    "negative-size.toml": "layers.hidden.size: must be positive, got -1",
    "no-layers.toml": "layers: missing (a recipe needs at least one [layers.NAME] table)",
    "pattern-negative.toml": "layers.secondary.contents[0].pattern: must be within 0..255, got -1",
    "pattern-too-large.toml": (
        "layers.secondary.contents[0].pattern: must be within 0..255, got 256"
    ),
    "raw-with-backing.toml": "layers.active.backing: format raw cannot have a backing node",
    "size-not-sector-multiple.toml": "layers.secondary.size: must be a multiple of 512, got 1000",
    "unknown-backing.toml": (
        "layers.hidden.backing: no layer named 'secundary' (layers: secondary, hidden)"
    ),
    "unknown-extent-key.toml": (
        "layers.secondary.contents[0].patern: unknown key (expected one of: length, offset, "
        "pattern)"
    ),
    "unknown-format.toml": (
        "layers.secondary.format: unknown format 'qcow3' (expected one of: qcow2, qed, raw, vmdk)"
    ),
    "unknown-layer-key.toml": (
        "layers.hidden.sise: unknown key (expected one of: backing, backing_file, cluster_size, "
        "contents, format, size)"
    ),
    "unknown-top-key.toml": (
        "colour: unknown key (expected one of: description, equal_lengths, layers)"
    ),
    "zero-size.toml": "layers.secondary.size: must be positive, got 0",
}


@pytest.fixture(scope="module", autouse=True)
def _clean_template_cache() -> Iterator[None]:
    """Leave no template directory behind in this worker."""
    yield
    clear_template_cache()


# -- helpers -------------------------------------------------------------------------


def granularity(layer: ChainLayer) -> int:
    """Allocation unit of a layer: its cluster (vmdk grains are 64 KiB)."""
    if layer.format == "vmdk":
        return 64 * K
    assert layer.cluster_size is not None
    return layer.cluster_size


def cluster_cover(extents: Sequence[tuple[int, int]], unit: int) -> list[tuple[int, int]]:
    """The clusters (merged) that writes to `extents` allocate."""
    out: list[tuple[int, int]] = []
    for off, length in sorted(extents):
        start = off // unit * unit
        end = -(-(off + length) // unit) * unit
        if out and out[-1][0] + out[-1][1] >= start:
            s, n = out[-1]
            out[-1] = (s, max(s + n, end) - s)
        else:
            out.append((start, end - start))
    return out


def qemu_io(build: QemuBuild, fmt: str, path: Path, *cmds: str) -> str:
    argv: list[str] = [build.io, "-f", fmt, str(path)]
    for c in cmds:
        argv += ["-c", c]
    return run(build, argv).stdout


def assert_reads(
    build: QemuBuild, layer: ChainLayer, checks: Sequence[tuple[int, int, int]]
) -> None:
    """Each (offset, length, pattern) reads back as the pattern from the layer's file."""
    out = qemu_io(build, layer.format, layer.path, *(f"read -P {p} {o} {n}" for o, n, p in checks))
    assert "verification failed" not in out and "failed" not in out, out
    assert sum(line.startswith("read ") for line in out.splitlines()) == len(checks), out


def gaps(layer_size: int, extents: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    out, pos = [], 0
    for o, n in sorted(extents):
        if o > pos:
            out.append((pos, o - pos))
        pos = o + n
    if pos < layer_size:
        out.append((pos, layer_size - pos))
    return out


# -- recipes (no QEMU) ---------------------------------------------------------------


def test_standard_recipes_present() -> None:
    assert set(standard_recipes()) >= STANDARD


@pytest.mark.parametrize("name", sorted(STANDARD))
def test_standard_recipe_loads(name: str) -> None:
    r = load_recipe(name)
    assert r.source == f"images/{name}.toml"
    assert r.description
    if name == "primary-child":
        assert r.names == ("primary-disk",)
    else:
        assert set(r.names) == {"secondary", "hidden", "active"}
        assert r.chain("active") == ("active", "hidden", "secondary")
        assert r.tops() == ("active",)
    assert r.equal_lengths == (not name.startswith("length-mismatch"))
    assert Recipe.from_dict(r.to_dict(), source=r.source) == r


def test_standard_geometry() -> None:
    mixed = load_recipe("secondary-mixed")
    assert [mixed.layer(n).cluster_size for n in ("active", "hidden", "secondary")] == [
        64 * K,
        2 * M,
        512,
    ]
    assert {ly.size for ly in load_recipe("secondary-1t").layers} == {T}
    assert {ly.size for ly in load_recipe("secondary-1m").layers} == {M}
    assert {ly.cluster_size for ly in load_recipe("secondary-512").layers} == {512}
    assert {ly.cluster_size for ly in load_recipe("secondary-2m").layers} == {2 * M}
    pre = load_recipe("secondary-prefilled").layer("secondary")
    assert [(e.offset, e.length, e.pattern) for e in pre.contents] == [
        (0, M, 0x11),
        (4 * M, 192 * K, 0x22),
    ]
    assert load_recipe("active-vmdk").layer("active").format == "vmdk"
    assert load_recipe("hidden-qed").layer("hidden").format == "qed"
    for which in ("active", "hidden", "secondary"):
        r = load_recipe(f"length-mismatch-{which}")
        assert [ly.name for ly in r.layers if ly.size != 64 * M] == [which]


@pytest.mark.parametrize("fname", sorted(BAD_RECIPES))
def test_bad_recipe_refused(fname: str) -> None:
    with pytest.raises(RecipeError) as info:
        load_recipe(BAD / fname)
    msg = str(info.value)
    assert msg == f"tests/data/bad-recipes/{fname}: {BAD_RECIPES[fname]}"
    assert "\n" not in msg
    assert info.value.exit_code == 7
    assert info.value.one_line() == f"qrc: {msg}"


def test_bad_recipe_table_matches_directory() -> None:
    assert sorted(p.name for p in BAD.glob("*.toml")) == sorted(BAD_RECIPES)


def test_load_by_name_path_and_unknown() -> None:
    assert load_recipe("secondary") == load_recipe("secondary.toml")
    assert load_recipe(ROOT / "images" / "secondary.toml").names == (
        "secondary",
        "hidden",
        "active",
    )
    with pytest.raises(
        RecipeError,
        match=r"^images/nope\.toml: no such recipe \(standard "
        r"recipes: active-vmdk, ",
    ):
        load_recipe("nope")


def test_from_dict_names_its_source() -> None:
    with pytest.raises(RecipeError) as info:
        Recipe.from_dict({"layers": {"a": {"size": "1Q"}}}, source="<case 12>")
    assert str(info.value) == (
        "<case 12>: layers.a.size: bad size '1Q': expected bytes or a "
        "number with suffix k, K, M, G or T"
    )
    with pytest.raises(
        RecipeError,
        match=r"^<x>: layers\.a\.contents\[0\]\.pattern: must be "
        r"an integer, got boolean$",
    ):
        Recipe.from_dict(
            {
                "layers": {
                    "a": {"size": 512, "contents": [{"offset": 0, "length": 512, "pattern": True}]}
                }
            },
            source="<x>",
        )
    with pytest.raises(
        RecipeError,
        match=r"^<x>: layers\.a-file: name clashes with the file "
        r"node of layer a$",
    ):
        Recipe.from_dict({"layers": {"a": {"size": 512}, "a-file": {"size": 512}}}, source="<x>")


@pytest.mark.parametrize(
    ("text", "value"),
    [
        (512, 512),
        ("512", 512),
        ("4k", 4 * K),
        ("4K", 4 * K),
        ("64M", 64 * M),
        ("3G", 3 * G),
        ("1T", T),
        ("0", 0),
    ],
)
def test_parse_size(text: int | str, value: int) -> None:
    assert parse_size(text) == value


@pytest.mark.parametrize("text", ["64m", "1.5M", "64 M", "M", "-1M", "64MiB", "0x10"])
def test_parse_size_refuses(text: str) -> None:
    with pytest.raises(ValueError, match="bad size"):
        parse_size(text)


def test_secondary_chain_builder() -> None:
    r = secondary_chain(size="1T", cluster=512, active_cluster="2M")
    assert [(ly.name, ly.size, ly.cluster_size, ly.backing) for ly in r.layers] == [
        ("secondary", T, 512, None),
        ("hidden", T, 512, "secondary"),
        ("active", T, 2 * M, "hidden"),
    ]
    assert r.equal_lengths
    assert r.source == "<secondary_chain size=1T, cluster=512, active_cluster=2M>"
    odd = secondary_chain(hidden_size="32M")
    assert not odd.equal_lengths and odd.layer("hidden").size == 32 * M
    raw = secondary_chain(secondary_format="raw", secondary_contents=[(0, "64k", 0x11)])
    assert raw.layer("secondary").cluster_size is None
    assert raw.layer("secondary").contents[0].length == 64 * K
    with pytest.raises(
        RecipeError,
        match=r"layers\.hidden\.cluster_size: must be within "
        r"\[4k, 2M\] for qed, got 512",
    ):
        secondary_chain(cluster=512, hidden_format="qed")


def test_coalesce() -> None:
    runs = [
        MapExtent(0, 4, True, False, True),
        MapExtent(4, 4, True, False, True),
        MapExtent(8, 8, False, True, False),
        MapExtent(16, 8, True, True, False),
        MapExtent(24, 8, True, False, True),
    ]
    assert coalesce(runs) == [
        MapExtent(0, 8, True, False, True),
        MapExtent(8, 8, False, True, False),
        MapExtent(16, 8, True, True, False),
        MapExtent(24, 8, True, False, True),
    ]
    assert allocated(coalesce(runs)) == [(0, 8), (16, 16)]


def test_blockdev_options(tmp_path: Path) -> None:
    r = load_recipe("secondary")
    layers = {
        ly.name: ChainLayer(
            ly.name, tmp_path / f"{ly.name}.qcow2", ly.format, ly.size, ly.cluster_size, ly.backing
        )
        for ly in r.layers
    }
    chain = Chain(recipe=r, workdir=tmp_path, layers=layers)

    def node(name: str) -> dict[str, object]:
        return {
            "driver": "qcow2",
            "node-name": name,
            "file": {
                "driver": "file",
                "node-name": f"{name}-file",
                "filename": str(tmp_path / f"{name}.qcow2"),
                "cache": {"no-flush": True},
            },
        }

    assert chain.blockdev("active") == {**node("active"), "backing": "hidden"}
    assert chain.blockdev("active", backing=AUTO) == chain.blockdev("active")
    assert chain.blockdev("secondary") == {**node("secondary"), "backing": None}
    assert chain.blockdev("active", backing=None) == {**node("active"), "backing": None}
    assert chain.blockdev("active", backing="other") == {**node("active"), "backing": "other"}
    assert chain.blockdev("active", backing=FROM_HEADER) == node("active")
    assert chain.nested("active") == {
        **node("active"),
        "backing": {**node("hidden"), "backing": {**node("secondary"), "backing": None}},
    }
    # Fresh dicts each time: callers may add options.
    chain.blockdev("active")["read-only"] = True
    assert "read-only" not in chain.blockdev("active")
    with pytest.raises(KeyError, match="no layer 'nope'"):
        chain.blockdev("nope")


# -- building (real qemu-img/qemu-io) ------------------------------------------------


@needs_qemu
@with_builds
@pytest.mark.parametrize("name", sorted(STANDARD))
def test_standard_recipe_builds(build: QemuBuild, name: str, tmp_path: Path) -> None:
    recipe = load_recipe(name)
    chain = build_chain(build, recipe, tmp_path)
    assert list(chain.layers) == list(recipe.names)
    for layer in chain:
        spec = recipe.layer(layer.name)
        assert layer.path == tmp_path / f"{layer.name}.{spec.format}"
        info = image_info(build, layer.path, layer.format)
        assert info["format"] == spec.format
        assert info["virtual-size"] == spec.size
        assert "backing-filename" not in info
        if spec.format in ("qcow2", "qed"):
            assert info["cluster-size"] == spec.cluster_size
        extents = [(e.offset, e.length) for e in spec.contents]
        if spec.contents:
            assert_reads(build, layer, [(e.offset, e.length, e.pattern) for e in spec.contents])
        holes = gaps(spec.size, extents)
        assert_reads(build, layer, [(o, min(n, M), 0) for o, n in holes[:3]])
        amap = allocation_map(build, layer.path, layer.format)
        assert amap[0].start == 0 and amap[-1].end == spec.size
        assert allocated(amap) == cluster_cover(extents, granularity(layer))
        check_image(build, layer.path, layer.format)


@needs_qemu
@with_builds
@pytest.mark.parametrize(
    ("fmt", "cluster", "expect"),
    [
        ("qcow2", 512, [(68 * K, 4 * K)]),
        ("qcow2", 64 * K, [(64 * K, 64 * K)]),
        ("qcow2", 2 * M, [(0, 2 * M)]),
        ("qed", 4 * K, [(68 * K, 4 * K)]),
        ("qed", 64 * K, [(64 * K, 64 * K)]),
        ("vmdk", None, [(64 * K, 64 * K)]),
    ],
)
def test_allocation_is_cluster_granular(
    build: QemuBuild,
    fmt: str,
    cluster: int | None,
    expect: list[tuple[int, int]],
    tmp_path: Path,
) -> None:
    layer: dict[str, object] = {
        "format": fmt,
        "size": "64M",
        "contents": [{"offset": "68k", "length": "4k", "pattern": 7}],
    }
    if cluster is not None:
        layer["cluster_size"] = cluster
    chain = build_chain(build, Recipe.from_dict({"layers": {"d": layer}}), tmp_path)
    amap = allocation_map(build, chain.path("d"), fmt)
    assert allocated(amap) == expect
    assert [e for e in amap if e.data] == [MapExtent(*expect[0], True, False, True)]


@needs_qemu
@with_builds
def test_raw_layers_are_sparse(build: QemuBuild, tmp_path: Path) -> None:
    recipe = Recipe.from_dict(
        {
            "layers": {
                "big": {
                    "format": "raw",
                    "size": "1T",
                    "contents": [{"offset": "512G", "length": "64k", "pattern": 0x5A}],
                }
            }
        }
    )
    chain = build_chain(build, recipe, tmp_path)
    st = chain.path("big").stat()
    assert st.st_size == T and st.st_blocks * 512 < 4 * M
    assert_reads(build, chain["big"], [(512 * G, 64 * K, 0x5A), (0, 64 * K, 0)])
    data = [(e.start, e.length) for e in allocation_map(build, chain.path("big"), "raw") if e.data]
    assert data == [(512 * G, 64 * K)]
    assert chain.blockdev("big") == {
        "driver": "raw",
        "node-name": "big",
        "file": {
            "driver": "file",
            "node-name": "big-file",
            "filename": str(chain.path("big")),
            "cache": {"no-flush": True},
        },
    }
    with pytest.raises(ValueError, match="raw"):
        chain.blockdev("big", backing="x")


@needs_qemu
@with_builds
def test_one_tib_chain_builds_in_milliseconds(build: QemuBuild, tmp_path: Path) -> None:
    recipe = load_recipe("secondary-1t")
    cache = TemplateCache(tmp_path / "templates")
    build_chain(build, recipe, tmp_path / "warm", cache=cache)
    t0 = time.perf_counter()
    chain = build_chain(build, recipe, tmp_path / "case", cache=cache)
    elapsed = time.perf_counter() - t0
    assert elapsed < 0.25, f"warm 1 TiB chain took {elapsed * 1000:.1f} ms"
    for layer in chain:
        assert layer.path.stat().st_size < M
        assert image_info(build, layer.path, "qcow2")["virtual-size"] == T


@needs_qemu
@with_builds
def test_template_cache_is_hit(build: QemuBuild, tmp_path: Path) -> None:
    templates = tmp_path / "templates"
    cache = TemplateCache(templates)
    first = build_chain(build, load_recipe("secondary"), tmp_path / "one", cache=cache)
    assert (cache.creates, cache.hits) == (1, 2)  # three layers, one geometry
    build_chain(build, load_recipe("secondary"), tmp_path / "two", cache=cache)
    assert (cache.creates, cache.hits) == (1, 5)
    build_chain(build, load_recipe("secondary-mixed"), tmp_path / "three", cache=cache)
    assert (cache.creates, cache.hits) == (3, 6)  # 512 and 2M are new, 64k is not
    # Copies are sparse: qemu-img writes a 2M-cluster image's metadata out in full.
    big = build_chain(build, load_recipe("secondary-2m"), tmp_path / "big", cache=cache)
    (big_template,) = [p for p in templates.iterdir() if "-2097152." in p.name]
    assert big.path("active").read_bytes() == big_template.read_bytes()
    assert big.path("active").stat().st_blocks * 512 < big_template.stat().st_size // 8
    assert (cache.creates, cache.hits) == (3, 9)
    # Contents are part of the key: the filled secondary is made once, then copied.
    for n in range(2):
        pre = build_chain(
            build, load_recipe("secondary-prefilled"), tmp_path / f"pre{n}", cache=cache
        )
        assert_reads(build, pre["secondary"], [(0, M, 0x11), (4 * M, 192 * K, 0x22)])
        assert allocated(allocation_map(build, pre.path("hidden"), "qcow2")) == []
    assert (cache.creates, cache.hits) == (4, 14)
    # A copy is byte for byte its template, and independent of it.
    (template,) = [p for p in templates.iterdir() if "-65536." in p.name]
    before = hashlib.sha256(template.read_bytes()).hexdigest()
    assert hashlib.sha256(first.path("active").read_bytes()).hexdigest() == before
    qemu_io(build, "qcow2", first.path("active"), "write -P 9 0 64k")
    assert hashlib.sha256(template.read_bytes()).hexdigest() == before
    # The caller's directory is the caller's: clear() leaves it.
    cache.clear()
    assert template.exists()


@needs_qemu
@with_builds
def test_default_cache_is_per_process_and_removed_at_exit(build: QemuBuild, tmp_path: Path) -> None:
    script = textwrap.dedent(f"""
        import json, sys
        from harness.builds import QemuBuild
        from harness.images import build_chain, load_recipe, default_template_cache
        build = QemuBuild(**json.loads(sys.argv[1]))
        build_chain(build, load_recipe("secondary"), {str(tmp_path)!r})
        print(default_template_cache().directory)
    """)
    fields = {f: getattr(build, f) for f in build.__dataclass_fields__}
    proc = subprocess.run(
        [sys.executable, "-c", script, json.dumps(fields)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    cache_dir = Path(proc.stdout.strip())
    assert cache_dir.name.startswith("qrc-templates-")
    assert not cache_dir.exists()
    assert default_template_cache() is default_template_cache()


@needs_qemu
@with_builds
def test_backing_file_header(build: QemuBuild, tmp_path: Path) -> None:
    recipe = Recipe.from_dict(
        {
            "layers": {
                "base": {"size": "64M", "contents": [{"offset": 0, "length": "64k", "pattern": 1}]},
                "top": {
                    "size": "64M",
                    "backing": "base",
                    "backing_file": True,
                    "contents": [{"offset": "64k", "length": "64k", "pattern": 2}],
                },
            }
        }
    )
    chain = build_chain(build, recipe, tmp_path)
    info = image_info(build, chain.path("top"), "qcow2")
    assert info["backing-filename"] == "base.qcow2"
    assert info["backing-filename-format"] == "qcow2"
    # Through the header, the top reads both layers; alone it holds only its own cluster.
    assert_reads(build, chain["top"], [(0, 64 * K, 1), (64 * K, 64 * K, 2)])
    assert allocated(allocation_map(build, chain.path("top"), "qcow2")) == [(64 * K, 64 * K)]
    assert "backing" not in chain.blockdev("top", backing=FROM_HEADER)


@needs_qemu
@with_builds
def test_build_errors(build: QemuBuild, tmp_path: Path) -> None:
    recipe = load_recipe("primary-child")
    build_chain(build, recipe, tmp_path)
    with pytest.raises(ImageError, match="already exists"):
        build_chain(build, recipe, tmp_path)
    # Valid as a recipe, impossible for qed: qemu-img's own words come through.
    too_big = Recipe.from_dict(
        {"layers": {"q": {"format": "qed", "size": "1T", "cluster_size": "4k"}}}
    )
    with pytest.raises(ImageError, match=r"qemu-img create .*exit 1: .*QED image size must be"):
        build_chain(build, too_big, tmp_path / "qed", cache=TemplateCache(tmp_path / "t"))
    assert not list((tmp_path / "t").glob(".*")), "no half-made template left"
    with pytest.raises(ImageError, match=r"no answer within 0\.2 s"):
        run(build, [sys.executable, "-c", "import time; time.sleep(10)"], timeout=0.2)


def _qcow2_refcount_entry(path: Path, host_offset: int) -> int:
    """File offset of the 16-bit refcount of the cluster at `host_offset`."""
    with open(path, "rb") as f:
        header = f.read(104)
        cluster_bits: int = struct.unpack(">I", header[20:24])[0]
        rt_offset: int = struct.unpack(">Q", header[48:56])[0]
        order: int = struct.unpack(">I", header[96:100])[0]
        assert order == 4  # 16-bit refcounts
        f.seek(rt_offset)
        block: int = struct.unpack(">Q", f.read(8))[0]
    index = host_offset >> cluster_bits
    assert index < (1 << cluster_bits) // 2, "first refcount block only"
    return block + 2 * index


def _set_refcount(path: Path, host_offset: int, value: int) -> None:
    where = _qcow2_refcount_entry(path, host_offset)
    with open(path, "r+b") as f:
        f.seek(where)
        f.write(struct.pack(">H", value))


@needs_qemu
@with_builds
def test_check_image(build: QemuBuild, tmp_path: Path) -> None:
    recipe = Recipe.from_dict(
        {
            "layers": {
                "d": {"size": "64M", "contents": [{"offset": 0, "length": "64k", "pattern": 3}]}
            }
        }
    )
    chain = build_chain(build, recipe, tmp_path)
    path = chain.path("d")
    ok = check_image(build, path, "qcow2")
    assert ok is not None and ok.allocated_clusters == 1 and ok.total_clusters == 1024
    assert check_image(build, path, "raw") is None

    # A leak: a cluster appended to the file, counted once, referenced by nobody.
    leaky = tmp_path / "leaky.qcow2"
    leaky.write_bytes(path.read_bytes() + bytes(64 * K))
    assert ok.image_end_offset == path.stat().st_size
    _set_refcount(leaky, ok.image_end_offset, 1)
    with pytest.raises(ImageCorrupt, match=r"0 corruptions, 1 leaked clusters"):
        check_image(build, leaky, "qcow2")

    # A corruption: the data cluster's refcount dropped to 0 while L2 references it.
    corrupt = tmp_path / "corrupt.qcow2"
    corrupt.write_bytes(path.read_bytes())
    entries = json.loads(
        run(build, [build.img, "map", "--output=json", "-f", "qcow2", str(path)]).stdout
    )
    _set_refcount(corrupt, entries[0]["offset"], 0)
    with pytest.raises(ImageCorrupt, match=r"[1-9]\d* corruptions"):
        check_image(build, corrupt, "qcow2")


@needs_qemu
@with_builds
def test_inspection_of_image_in_use(build: QemuBuild, tmp_path: Path) -> None:
    """force_share lets a case look at a layer a live QEMU still holds."""
    chain = build_chain(build, load_recipe("primary-child"), tmp_path)
    path = chain.path("primary-disk")
    holder = subprocess.Popen(
        [*build.command(build.io), "-f", "qcow2", str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={**os.environ, **build.env()},
        text=True,
    )
    try:
        assert holder.stdin is not None and holder.stdout is not None
        holder.stdin.write("write -P 4 0 4k\n")
        holder.stdin.flush()
        deadline = time.monotonic() + 10
        line = ""
        while "wrote" not in line and time.monotonic() < deadline:
            line = holder.stdout.readline()
        with pytest.raises(ImageError, match="lock"):
            allocation_map(build, path, "qcow2")
        assert allocated(allocation_map(build, path, "qcow2", force_share=True)) == [(0, 64 * K)]
    finally:
        holder.kill()
        holder.wait()
