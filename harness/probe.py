"""What a QEMU build can do, asked once and cached.

Cases must be skipped or failed for the right reason: a build without the
replication driver is "cannot test", not "replication is broken".  So each
build is asked through QMP (query-version, query-qmp-schema) and the answer
is reduced to a small `Probe`.  Schema parsing is a pure function
(`probe_from_schema`) so that recorded schemas can be tested without QEMU.

The launcher here is deliberately tiny and self-contained: it only needs
``-M none`` and a few queries, not the general machine launcher.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar, cast

from qemu.qmp import QMPClient, QMPError

from harness.builds import QemuBuild
from harness.errors import BinaryNotExecutable, NoReplication, ProbeError
from harness.tmp import private_dir

# Commands the harness drives; all of them are needed to run replication cases.
REQUIRED_COMMANDS: tuple[str, ...] = (
    "xen-set-replication",
    "xen-colo-do-checkpoint",
    "query-xen-replication-status",
    "block-export-add",
    "x-debug-query-block-graph",
    "x-blockdev-change",
    "human-monitor-command",
    "nbd-server-start",
)

NbdAddrForm = Literal["legacy", "flat"]

# Bump when Probe's fields or their meaning change: old cache files are ignored.
CACHE_FORMAT = 1
TIMEOUT = 10.0

T = TypeVar("T")


@dataclass(frozen=True)
class Probe:
    """The facts about one build that decide what the harness can run."""

    path: str
    version: str
    version_tuple: tuple[int, int, int]
    package: str
    has_replication: bool
    # None when the build has no nbd-server-start at all.
    nbd_addr_form: NbdAddrForm | None
    drivers: frozenset[str] = field(default_factory=frozenset)
    commands: frozenset[str] = field(default_factory=frozenset)

    def has_command(self, name: str) -> bool:
        return name in self.commands

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "version": self.version,
            "version_tuple": list(self.version_tuple),
            "package": self.package,
            "has_replication": self.has_replication,
            "nbd_addr_form": self.nbd_addr_form,
            "drivers": sorted(self.drivers),
            "commands": sorted(self.commands),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Probe:
        """Rebuild from `to_dict`; ValueError on any shape mismatch."""
        try:
            vt = tuple(int(x) for x in data["version_tuple"])
            form = data["nbd_addr_form"]
            if form not in ("legacy", "flat", None) or len(vt) != 3:
                raise ValueError(f"bad probe data: {data!r:.200}")
            return cls(
                path=str(data["path"]),
                version=str(data["version"]),
                version_tuple=(vt[0], vt[1], vt[2]),
                package=str(data["package"]),
                has_replication=bool(data["has_replication"]),
                nbd_addr_form=cast("NbdAddrForm | None", form),
                drivers=frozenset(str(d) for d in data["drivers"]),
                commands=frozenset(str(c) for c in data["commands"]),
            )
        except (KeyError, TypeError) as exc:
            raise ValueError(f"bad probe data: {exc}") from exc

    @classmethod
    def from_json(cls, text: str) -> Probe:
        return cls.from_dict(json.loads(text))


def _enum_values(entry: Mapping[str, Any]) -> set[str]:
    """Enum members: `members` (QEMU >= 6.0) and/or the older `values`."""
    names = {str(m["name"]) for m in entry.get("members", [])}
    names.update(str(v) for v in entry.get("values", []))
    return names


def _member_type(by_name: Mapping[str, Mapping[str, Any]], obj: str, member: str) -> str | None:
    """The (masked) type name of `member` in object type `obj`, if any."""
    for m in by_name.get(obj, {}).get("members", []):
        if m.get("name") == member:
            return str(m["type"])
    return None


def _command_arg_member(
    by_name: Mapping[str, Mapping[str, Any]], command: str, member: str
) -> str | None:
    cmd = by_name.get(command)
    if cmd is None or cmd.get("meta-type") != "command":
        return None
    return _member_type(by_name, str(cmd.get("arg-type", "")), member)


def _nbd_addr_form(by_name: Mapping[str, Mapping[str, Any]]) -> NbdAddrForm | None:
    """`legacy` when every addr variant wraps its fields in `data`."""
    if "nbd-server-start" not in by_name:
        return None
    addr = _command_arg_member(by_name, "nbd-server-start", "addr")
    if addr is None:
        return None
    variants = by_name.get(addr, {}).get("variants", [])
    wrapped = [
        [m.get("name") for m in by_name.get(str(v["type"]), {}).get("members", [])] == ["data"]
        for v in variants
    ]
    return "legacy" if wrapped and all(wrapped) else "flat"


def probe_from_schema(
    version_reply: Mapping[str, Any], schema: Sequence[Mapping[str, Any]], path: str = ""
) -> Probe:
    """Reduce query-version's and query-qmp-schema's return values to a Probe.

    Type names are masked (numbers) in the schema, so the driver enum is
    found by following blockdev-add's argument type to its `driver` member.
    """
    try:
        q = version_reply["qemu"]
        vt = (int(q["major"]), int(q["minor"]), int(q["micro"]))
        package = str(version_reply.get("package", ""))
    except (KeyError, TypeError, ValueError) as exc:
        raise ProbeError(f"{path or 'QEMU'}: unexpected query-version reply: {exc}") from exc
    try:
        by_name = {str(e["name"]): e for e in schema}
        commands = frozenset(n for n, e in by_name.items() if e.get("meta-type") == "command")
        drivers: set[str] = set()
        driver_type = _command_arg_member(by_name, "blockdev-add", "driver")
        if driver_type is not None and by_name.get(driver_type, {}).get("meta-type") == "enum":
            drivers = _enum_values(by_name[driver_type])
        nbd_form = _nbd_addr_form(by_name)
    except (KeyError, TypeError, AttributeError) as exc:
        raise ProbeError(f"{path or 'QEMU'}: unexpected query-qmp-schema reply: {exc!r}") from exc
    return Probe(
        path=path,
        version=".".join(map(str, vt)),
        version_tuple=vt,
        package=package,
        has_replication="replication" in drivers,
        nbd_addr_form=nbd_form,
        drivers=frozenset(drivers),
        commands=commands,
    )


def replication_verdict(probe: Probe) -> str | None:
    """None when the build can run replication cases, else a one-line reason."""
    where = f"QEMU {probe.version} at {probe.path}"
    if not probe.has_replication:
        return f"{where} has no replication block driver (built without --enable-replication)"
    missing = [c for c in REQUIRED_COMMANDS if c not in probe.commands]
    if missing:
        return f"{where} lacks QMP commands {', '.join(missing)}"
    return None


def require_replication(probe: Probe) -> None:
    """Raise NoReplication (exit code 6) when the build cannot run replication."""
    verdict = replication_verdict(probe)
    if verdict is not None:
        raise NoReplication(verdict)


# --- launching -------------------------------------------------------------


def _last_line(path: Path) -> str:
    try:
        lines = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return lines[-1] if lines else ""


async def _session(
    build: QemuBuild, script: Callable[[QMPClient, Path], Awaitable[T]], timeout: float
) -> T:
    """Start `-M none -S`, let it connect to our QMP socket, run `script`, quit.

    QEMU is the QMP client (we listen), so no polling for a socket file is
    needed; its exit is watched at the same time so a crash fails at once.
    """
    tmp = private_dir("qrc")  # 0700, short path
    sock = tmp / "qmp"
    qmp = QMPClient(f"probe:{build.label}")
    proc: asyncio.subprocess.Process | None = None
    try:
        try:
            await qmp.start_server(str(sock))
        except QMPError as exc:
            raise ProbeError(f"cannot listen for QMP on {sock}: {exc}") from exc
        with open(tmp / "stderr", "wb") as err:
            try:
                proc = await asyncio.create_subprocess_exec(
                    *build.command(build.system),
                    *("-M", "none", "-nodefaults", "-display", "none", "-S"),
                    *build.data_args(),
                    *("-qmp", f"unix:{sock}"),
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=asyncio.subprocess.DEVNULL,
                    stderr=err,
                    env={**os.environ, **build.env()},
                )
            except OSError as exc:
                raise BinaryNotExecutable(f"{build.system}: {exc.strerror}") from exc
        accept = asyncio.ensure_future(qmp.accept())
        exited = asyncio.ensure_future(proc.wait())
        done, _ = await asyncio.wait(
            {accept, exited}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
        )
        if accept not in done:
            accept.cancel()
            with contextlib.suppress(asyncio.CancelledError, QMPError):
                await accept
            if exited in done:
                why = _last_line(tmp / "stderr") or "no message"
                raise ProbeError(
                    f"{build.system} exited with status {proc.returncode} "
                    f"before connecting to QMP: {why}"
                )
            raise ProbeError(f"{build.system} did not connect to QMP within {timeout:g}s")
        try:
            accept.result()
        except QMPError as exc:
            raise ProbeError(f"{build.system}: QMP handshake failed: {exc}") from exc
        try:
            result = await asyncio.wait_for(script(qmp, tmp), timeout)
        except TimeoutError as exc:
            raise ProbeError(f"{build.system}: no QMP reply within {timeout:g}s") from exc
        except QMPError as exc:
            raise ProbeError(f"{build.system}: QMP error while probing: {exc}") from exc
        # The reply to quit may be lost to the hang-up; either way it is gone.
        with contextlib.suppress(QMPError, EOFError, OSError, TimeoutError):
            await asyncio.wait_for(qmp.execute("quit"), timeout)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(exited, timeout)
        return result
    finally:
        if proc is not None and proc.returncode is None:
            proc.kill()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(proc.wait(), timeout)
        # After QEMU hangs up, disconnect re-raises the reader's EOFError.
        with contextlib.suppress(Exception):
            await qmp.disconnect()
        shutil.rmtree(tmp, ignore_errors=True)


def run_qmp(
    build: QemuBuild,
    script: Callable[[QMPClient, Path], Awaitable[T]],
    timeout: float = TIMEOUT,
) -> T:
    """Run `script(qmp, private_tmp_dir)` against a fresh `-M none` QEMU."""
    return asyncio.run(_session(build, script, timeout))


async def _query(qmp: QMPClient, _tmp: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    version = await qmp.execute("query-version")
    schema = await qmp.execute("query-qmp-schema")
    if not isinstance(version, dict) or not isinstance(schema, list):
        raise ProbeError("unexpected reply shapes from query-version/query-qmp-schema")
    return version, schema


def fetch_schema(build: QemuBuild) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """query-version's and query-qmp-schema's return values, from a live QEMU."""
    return run_qmp(build, _query)


# --- cache -----------------------------------------------------------------


def cache_dir(environ: Mapping[str, str] | None = None) -> Path:
    """QRC_CACHE_DIR, else $XDG_CACHE_HOME/qrc/probe, else ~/.cache/qrc/probe."""
    env = os.environ if environ is None else environ
    if env.get("QRC_CACHE_DIR"):
        return Path(env["QRC_CACHE_DIR"])
    base = env.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "qrc" / "probe"


def _cache_key(system: str) -> dict[str, Any]:
    """Identity of the binary: a rebuilt or replaced binary gets a new key."""
    real = os.path.realpath(system)
    st = os.stat(real)
    return {
        "format": CACHE_FORMAT,
        "realpath": real,
        "size": st.st_size,
        "mtime_ns": st.st_mtime_ns,
    }


def _cache_file(directory: Path, key: Mapping[str, Any]) -> Path:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:32]
    return directory / f"{digest}.json"


def _cache_load(path: Path, key: Mapping[str, Any]) -> Probe | None:
    try:
        data = json.loads(path.read_text())
        if data.get("key") != key:
            return None
        return Probe.from_dict(data["probe"])
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None  # missing or corrupt: probe again


def _cache_store(path: Path, key: Mapping[str, Any], result: Probe) -> None:
    """Write atomically (temp file + rename) so parallel workers never see half a file."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".json")
        try:
            with os.fdopen(fd, "w") as f:
                json.dump({"key": key, "probe": result.to_dict()}, f, sort_keys=True)
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
    except OSError:
        pass  # an unwritable cache only costs time


def probe(build: QemuBuild, *, use_cache: bool = True, cache: Path | None = None) -> Probe:
    """Probe `build`, reusing a cached answer for the very same binary."""
    try:
        key = _cache_key(build.system)
    except OSError as exc:
        raise BinaryNotExecutable(f"{build.system}: {exc.strerror}") from exc
    path = _cache_file(cache if cache is not None else cache_dir(), key)
    if use_cache:
        hit = _cache_load(path, key)
        if hit is not None:
            # The same file may have been reached through another path.
            return dataclasses.replace(hit, path=build.system)
    version, schema = fetch_schema(build)
    result = probe_from_schema(version, schema, path=build.system)
    if use_cache:
        _cache_store(path, key, result)
    return result


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


def probe_text(build: QemuBuild, result: Probe) -> str:
    """`qrc probe`'s answer for one build: what it can do, a row each."""
    rows = [("path", result.path)]
    if build.module_dir:
        rows.append(("module dir", build.module_dir))
    rows.append(("replication driver", _yes(result.has_replication)))
    rows += [(cmd, _yes(result.has_command(cmd))) for cmd in REQUIRED_COMMANDS]
    rows.append(("nbd-server-start addr form", result.nbd_addr_form or "n/a"))
    rows.append(("verdict", replication_verdict(result) or "can run replication cases"))
    head = f"QEMU {result.version} ({result.package or 'no package string'}) [{build.label}]"
    return "\n".join([head, *(f"  {k:<29} {v}" for k, v in rows)])


def probe_json(build: QemuBuild, result: Probe) -> dict[str, object]:
    """`qrc probe --json`'s answer for one build."""
    return {
        "label": build.label,
        "module_dir": build.module_dir,
        "verdict": replication_verdict(result),
        "probe": result.to_dict(),
    }
