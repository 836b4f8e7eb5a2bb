"""Image chain recipes: parse and validate declarative TOML (or dict) descriptions.

A recipe names layers (one image file each) and how they back onto each
other. Everything is checked up front so a bad recipe ends in one line
naming the file and the dotted key, never in a qemu-img error halfway
through a build.

Schema (TOML)::

    description = "..."          # optional string
    equal_lengths = true         # optional; all layers of a backing chain same size
    [layers.NAME]                # one table per layer, NAME is the QEMU node name
    format = "qcow2"             # qcow2 (default), raw, qed, vmdk
    size = "64M"                 # required: int bytes or "<n>[kKMGT]"
    cluster_size = "64k"         # qcow2 [512, 2M], qed [4k, 2M]; default 64k
    backing = "OTHER"            # optional: the layer this one backs onto
    backing_file = false         # true: also write a backing file header
    [[layers.NAME.contents]]     # optional extents written with qemu-io
    offset = "4M"
    length = "192k"
    pattern = 0x22
"""

from __future__ import annotations

import itertools
import os
import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness import project_root
from harness.errors import RecipeError

FORMATS = ("qcow2", "qed", "raw", "vmdk")
# Formats whose cluster size is chosen at creation, with QEMU's limits
# (qed itself accepts up to 64M; the harness keeps both at qcow2's 2M).
CLUSTER_RANGE = {"qcow2": (512, 2 << 20), "qed": (4096, 2 << 20)}
DEFAULT_CLUSTER = 64 << 10
# Formats that can name a backing file in their header.
BACKING_HEADER_FORMATS = ("qcow2", "qed", "vmdk")

_SUFFIXES = {"": 1, "k": 1 << 10, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
_SIZE_RE = re.compile(r"(\d+)([kKMGT]?)")
# QEMU node names: a letter, then letters, digits, '-', '_' ('.' is left out
# so dotted keys stay unambiguous); 31 bytes at most including "-file".
_NAME_RE = re.compile(r"[A-Za-z][A-Za-z0-9_-]*")
_NAME_MAX = 31 - len("-file")
FILE_NODE_SUFFIX = "-file"

_TOP_KEYS = ("description", "equal_lengths", "layers")
_LAYER_KEYS = ("backing", "backing_file", "cluster_size", "contents", "format", "size")
_EXTENT_KEYS = ("length", "offset", "pattern")


def images_dir() -> Path:
    """Where the standard recipes live."""
    return project_root() / "images"


class _Invalid(Exception):
    """A validation failure at a dotted key; turned into RecipeError with the source."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key}: {message}")
        self.key = key
        self.message = message


def _type_name(value: object) -> str:
    return {
        bool: "boolean",
        int: "integer",
        float: "float",
        str: "string",
        list: "array",
        dict: "table",
    }.get(type(value), type(value).__name__)


def parse_size(value: int | str) -> int:
    """Bytes from an int or a "<n>[kKMGT]" string ("64M", "1T"); ValueError if malformed."""
    try:
        return _size(value, "size")
    except _Invalid as e:
        raise ValueError(e.message) from None


def _size(value: object, key: str) -> int:
    """parse_size for validation: failures name the dotted key; sign is the caller's."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise _Invalid(key, f"must be an integer or a size string, got {_type_name(value)}")
    if isinstance(value, int):
        return value
    m = _SIZE_RE.fullmatch(value)
    if m is None:
        raise _Invalid(
            key, f"bad size {value!r}: expected bytes or a number with suffix k, K, M, G or T"
        )
    return int(m.group(1)) * _SUFFIXES[m.group(2)]


def format_size(n: int) -> str:
    """The shortest exact binary-suffix spelling, for messages and to_dict()."""
    for suffix in ("T", "G", "M", "k"):
        unit = _SUFFIXES[suffix]
        if n and n % unit == 0:
            return f"{n // unit}{suffix}"
    return str(n)


@dataclass(frozen=True)
class Extent:
    """Bytes [offset, offset+length) of a layer filled with `pattern` at build time."""

    offset: int
    length: int
    pattern: int

    @property
    def end(self) -> int:
        return self.offset + self.length


@dataclass(frozen=True)
class Layer:
    """One image file of a chain; `name` is also its QEMU node name."""

    name: str
    format: str
    size: int
    cluster_size: int | None
    backing: str | None = None
    backing_file: bool = False
    contents: tuple[Extent, ...] = ()

    @property
    def file_node(self) -> str:
        """The node name of the protocol (file) node under this layer."""
        return self.name + FILE_NODE_SUFFIX


@dataclass(frozen=True)
class Recipe:
    """A validated set of layers; build it with harness.images.build_chain."""

    source: str
    layers: tuple[Layer, ...]
    description: str = ""
    equal_lengths: bool = True

    # -- lookups ---------------------------------------------------------

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(layer.name for layer in self.layers)

    def layer(self, name: str) -> Layer:
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise KeyError(f"{self.source}: no layer {name!r} (layers: {', '.join(self.names)})")

    def chain(self, name: str) -> tuple[str, ...]:
        """`name` and the layers below it, top first."""
        out = [name]
        backing = self.layer(name).backing
        while backing is not None:
            out.append(backing)
            backing = self.layer(backing).backing
        return tuple(out)

    def tops(self) -> tuple[str, ...]:
        """Layers nothing backs onto (the heads of the chains)."""
        below = {layer.backing for layer in self.layers}
        return tuple(n for n in self.names if n not in below)

    def build_order(self) -> tuple[Layer, ...]:
        """Layers with every backing layer before its overlays (headers need the file)."""
        done: list[Layer] = []
        seen: set[str] = set()
        for layer in self.layers:
            for name in reversed(self.chain(layer.name)):
                if name not in seen:
                    seen.add(name)
                    done.append(self.layer(name))
        return tuple(done)

    # -- construction ----------------------------------------------------

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "<dict>") -> Recipe:
        """Validate a parsed recipe; raises RecipeError naming `source` and the key."""
        try:
            return _validate(data, source)
        except _Invalid as e:
            raise RecipeError(f"{source}: {e.key}: {e.message}") from None

    @classmethod
    def from_toml(cls, text: str, source: str = "<toml>") -> Recipe:
        """Parse TOML text; malformed TOML is refused with tomllib's line and column."""
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            raise RecipeError(f"{source}: invalid TOML: {e}") from None
        return cls.from_dict(data, source)

    def to_dict(self) -> dict[str, Any]:
        """The recipe as from_dict() input (sizes spelled with suffixes)."""
        layers: dict[str, Any] = {}
        for layer in self.layers:
            d: dict[str, Any] = {"format": layer.format, "size": format_size(layer.size)}
            if layer.cluster_size is not None:
                d["cluster_size"] = format_size(layer.cluster_size)
            if layer.backing is not None:
                d["backing"] = layer.backing
            if layer.backing_file:
                d["backing_file"] = True
            if layer.contents:
                d["contents"] = [
                    {
                        "offset": format_size(e.offset) if e.offset else 0,
                        "length": format_size(e.length),
                        "pattern": e.pattern,
                    }
                    for e in layer.contents
                ]
            layers[layer.name] = d
        return {
            "description": self.description,
            "equal_lengths": self.equal_lengths,
            "layers": layers,
        }


# -- validation --------------------------------------------------------------


def _check_keys(table: Mapping[str, Any], allowed: Sequence[str], prefix: str) -> None:
    for key in table:
        if key not in allowed:
            raise _Invalid(f"{prefix}{key}", f"unknown key (expected one of: {', '.join(allowed)})")


def _table(value: object, key: str) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise _Invalid(key, f"must be a table, got {_type_name(value)}")
    return value


def _positive_size(value: object, key: str) -> int:
    n = _size(value, key)
    if n <= 0:
        raise _Invalid(key, f"must be positive, got {n}")
    return n


def _validate(data: Mapping[str, Any], source: str) -> Recipe:
    _check_keys(data, _TOP_KEYS, "")
    description = data.get("description", "")
    if not isinstance(description, str):
        raise _Invalid("description", f"must be a string, got {_type_name(description)}")
    equal = data.get("equal_lengths", True)
    if not isinstance(equal, bool):
        raise _Invalid("equal_lengths", f"must be true or false, got {_type_name(equal)}")
    if "layers" not in data:
        raise _Invalid("layers", "missing (a recipe needs at least one [layers.NAME] table)")
    layers_t = _table(data["layers"], "layers")
    if not layers_t:
        raise _Invalid("layers", "at least one layer is needed")

    layers = [_validate_layer(name, value) for name, value in layers_t.items()]
    by_name = {layer.name: layer for layer in layers}
    for layer in layers:
        owner = layer.name.removesuffix(FILE_NODE_SUFFIX)
        if owner != layer.name and owner in by_name:
            raise _Invalid(
                f"layers.{layer.name}", f"name clashes with the file node of layer {owner}"
            )
    _validate_backing(layers, by_name)
    if equal:
        for layer in layers:
            if layer.backing is not None:
                below = by_name[layer.backing]
                if below.size != layer.size:
                    raise _Invalid(
                        f"layers.{layer.name}.size",
                        f"{layer.size} differs from its backing layer {below.name}'s "
                        f"{below.size} (set equal_lengths = false to allow)",
                    )
    return Recipe(source=source, layers=tuple(layers), description=description, equal_lengths=equal)


def _validate_layer(name: str, value: object) -> Layer:
    prefix = f"layers.{name}"
    if not _NAME_RE.fullmatch(name) or len(name) > _NAME_MAX:
        raise _Invalid(
            prefix,
            f"layer name must be a QEMU node name: a letter, then letters, "
            f"digits, '-' or '_', at most {_NAME_MAX} characters",
        )
    table = _table(value, prefix)
    _check_keys(table, _LAYER_KEYS, prefix + ".")

    fmt = table.get("format", "qcow2")
    if not isinstance(fmt, str):
        raise _Invalid(f"{prefix}.format", f"must be a string, got {_type_name(fmt)}")
    if fmt not in FORMATS:
        raise _Invalid(
            f"{prefix}.format", f"unknown format {fmt!r} (expected one of: {', '.join(FORMATS)})"
        )

    if "size" not in table:
        raise _Invalid(f"{prefix}.size", "missing")
    size = _positive_size(table["size"], f"{prefix}.size")
    if size % 512:
        raise _Invalid(f"{prefix}.size", f"must be a multiple of 512, got {size}")

    cluster: int | None = None
    if "cluster_size" in table:
        key = f"{prefix}.cluster_size"
        if fmt not in CLUSTER_RANGE:
            raise _Invalid(key, f"not supported for format {fmt}")
        cluster = _positive_size(table["cluster_size"], key)
        if cluster & (cluster - 1):
            raise _Invalid(key, f"must be a power of two, got {cluster}")
        lo, hi = CLUSTER_RANGE[fmt]
        if not lo <= cluster <= hi:
            raise _Invalid(
                key,
                f"must be within [{format_size(lo)}, {format_size(hi)}] "
                f"for {fmt}, got {format_size(cluster)}",
            )
    elif fmt in CLUSTER_RANGE:
        cluster = DEFAULT_CLUSTER

    backing = table.get("backing")
    if backing is not None:
        if not isinstance(backing, str):
            raise _Invalid(f"{prefix}.backing", f"must be a layer name, got {_type_name(backing)}")
        if fmt not in BACKING_HEADER_FORMATS:
            raise _Invalid(f"{prefix}.backing", f"format {fmt} cannot have a backing node")
    backing_file = table.get("backing_file", False)
    if not isinstance(backing_file, bool):
        raise _Invalid(
            f"{prefix}.backing_file", f"must be true or false, got {_type_name(backing_file)}"
        )
    if backing_file and backing is None:
        raise _Invalid(f"{prefix}.backing_file", "needs 'backing' (the layer to name)")

    contents = _validate_contents(table.get("contents", []), size, prefix)
    return Layer(
        name=name,
        format=fmt,
        size=size,
        cluster_size=cluster,
        backing=backing,
        backing_file=backing_file,
        contents=contents,
    )


def _validate_contents(value: object, size: int, prefix: str) -> tuple[Extent, ...]:
    key = f"{prefix}.contents"
    if not isinstance(value, list):
        raise _Invalid(key, f"must be an array of tables, got {_type_name(value)}")
    extents: list[tuple[int, Extent]] = []
    for i, item in enumerate(value):
        ikey = f"{key}[{i}]"
        t = _table(item, ikey)
        _check_keys(t, _EXTENT_KEYS, ikey + ".")
        for k in _EXTENT_KEYS:
            if k not in t:
                raise _Invalid(f"{ikey}.{k}", "missing")
        offset = _size(t["offset"], f"{ikey}.offset")
        if offset < 0:
            raise _Invalid(f"{ikey}.offset", f"must not be negative, got {offset}")
        length = _positive_size(t["length"], f"{ikey}.length")
        pattern = t["pattern"]
        if isinstance(pattern, bool) or not isinstance(pattern, int):
            raise _Invalid(f"{ikey}.pattern", f"must be an integer, got {_type_name(pattern)}")
        if not 0 <= pattern <= 255:
            raise _Invalid(f"{ikey}.pattern", f"must be within 0..255, got {pattern}")
        ext = Extent(offset, length, pattern)
        if ext.end > size:
            raise _Invalid(ikey, f"extent [{offset}, {ext.end}) ends past the layer's size {size}")
        extents.append((i, ext))
    ordered = sorted(extents, key=lambda ie: ie[1].offset)
    for (i, a), (j, b) in itertools.pairwise(ordered):
        if b.offset < a.end:
            first, second = ((i, a), (j, b)) if i < j else ((j, b), (i, a))
            raise _Invalid(
                f"{key}[{second[0]}]",
                f"[{second[1].offset}, {second[1].end}) overlaps contents[{first[0]}] "
                f"[{first[1].offset}, {first[1].end})",
            )
    return tuple(e for _, e in extents)


def _validate_backing(layers: Sequence[Layer], by_name: Mapping[str, Layer]) -> None:
    for layer in layers:
        if layer.backing is not None and layer.backing not in by_name:
            raise _Invalid(
                f"layers.{layer.name}.backing",
                f"no layer named {layer.backing!r} (layers: {', '.join(by_name)})",
            )
    for layer in layers:
        path = [layer.name]
        nxt = layer.backing
        while nxt is not None:
            if nxt in path:
                loop = [*path[path.index(nxt) :], nxt]
                raise _Invalid(f"layers.{loop[0]}.backing", f"backing loop {' -> '.join(loop)}")
            path.append(nxt)
            nxt = by_name[nxt].backing
    for layer in layers:
        if layer.backing_file and layer.format == "vmdk":
            below = by_name[layer.backing or ""]
            if below.format != "vmdk":
                raise _Invalid(
                    f"layers.{layer.name}.backing_file",
                    f"a vmdk header can only name a vmdk backing file, "
                    f"but {below.name} is {below.format}",
                )


# -- loading -----------------------------------------------------------------


def _display(path: Path) -> str:
    """The path as messages show it: relative to the project when inside it."""
    try:
        return str(path.resolve().relative_to(project_root()))
    except ValueError:
        return str(path)


def standard_recipes() -> list[str]:
    """Names of the recipes in the project's images/ directory."""
    return sorted(p.stem for p in images_dir().glob("*.toml"))


def resolve_recipe(name_or_path: str | os.PathLike[str]) -> Path:
    """A bare name ("secondary") means images/secondary.toml; anything else is a path."""
    raw = os.fspath(name_or_path)
    path = Path(raw)
    if os.sep in raw or path.exists():
        return path
    stem = raw[:-5] if raw.endswith(".toml") else raw
    return images_dir() / f"{stem}.toml"


def load_recipe(name_or_path: str | os.PathLike[str]) -> Recipe:
    """Read and validate a recipe by bare name (images/NAME.toml) or path."""
    path = resolve_recipe(name_or_path)
    shown = _display(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise RecipeError(
            f"{shown}: no such recipe (standard recipes: {', '.join(standard_recipes())})"
        ) from None
    except (OSError, UnicodeDecodeError) as e:
        raise RecipeError(f"{shown}: cannot read: {e}") from None
    return Recipe.from_toml(text, source=shown)
