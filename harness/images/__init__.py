"""Declarative image chain recipes, the qemu-img builder, and offline layer inspection.

recipe   parse and validate recipes (TOML in images/, or dicts)
builder  build a recipe into files via a per-process template cache
offline  allocation maps and qemu-img check of a layer after QEMU quit
tools    running the build's qemu-img/qemu-io with a deadline
"""

from harness.images.builder import (
    AUTO,
    FROM_HEADER,
    BackingMode,
    Chain,
    ChainLayer,
    TemplateCache,
    build_chain,
    clear_template_cache,
    default_template_cache,
)
from harness.images.offline import (
    CheckResult,
    MapExtent,
    allocated,
    allocation_map,
    check_image,
    coalesce,
    image_info,
    layer_filename,
)
from harness.images.recipe import (
    FORMATS,
    Extent,
    Layer,
    Recipe,
    format_size,
    images_dir,
    load_recipe,
    parse_size,
    resolve_recipe,
    standard_recipes,
)
from harness.images.tools import ImageCorrupt, ImageError

__all__ = [
    "AUTO",
    "FORMATS",
    "FROM_HEADER",
    "BackingMode",
    "Chain",
    "ChainLayer",
    "CheckResult",
    "Extent",
    "ImageCorrupt",
    "ImageError",
    "Layer",
    "MapExtent",
    "Recipe",
    "TemplateCache",
    "allocated",
    "allocation_map",
    "build_chain",
    "check_image",
    "clear_template_cache",
    "coalesce",
    "default_template_cache",
    "format_size",
    "image_info",
    "images_dir",
    "layer_filename",
    "load_recipe",
    "parse_size",
    "resolve_recipe",
    "standard_recipes",
]
