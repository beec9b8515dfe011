# SPDX-License-Identifier: GPL-2.0-or-later
"""``vmpatch verify --system``: find an installed kernel, its config and its modules.

Like ``depmod -b DIR``, a mounted image is read under ``--root`` and the
running system under ``/``: the kernel image from ``boot/vmlinuz-KVER``
(``boot/vmlinux-KVER`` where ppc64 ships an ELF), ``usr/lib/modules/KVER/vmlinuz``
(Fedora, Arch and systemd's kernel-install layout) or a UKI under
``EFI/Linux/`` of the ESP (the Boot Loader Specification's type 2 entries),
the config beside it (``boot/config-KVER``, ``usr/lib/modules/KVER/config``),
and the modules from ``lib/modules/KVER`` or ``usr/lib/modules/KVER``.
Nothing is written.

Symbolic links are followed as a chroot would follow them: an absolute
target restarts at the root, so ``lib -> /usr/lib`` in an image never reads
the host's files.

For the running system, and for an image where they are present, the
runtime state that decides enforcement is read too: the ``module.sig_enforce``
parameter (``/sys/module/module/parameters/sig_enforce``, kernel/module/signing.c)
and the lockdown level (``/sys/kernel/security/lockdown``,
security/lockdown/lockdown.c). A mounted image has no sysfs: then the
verdicts say what they assume.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from vmpatch.errors import InputError, SystemFailure, UsageError

__all__ = [
    "RuntimeState",
    "SystemKernel",
    "find_system",
    "read_runtime",
    "resolve_in",
]

#: ELOOP's limit (include/linux/namei.h MAXSYMLINKS).
_MAX_SYMLINKS = 40

SIG_ENFORCE = "sys/module/module/parameters/sig_enforce"
LOCKDOWN = "sys/kernel/security/lockdown"

#: Where a UKI sits: the ESP mounted at /efi, /boot or /boot/efi (Boot Loader Specification).
_UKI_DIRS = ("efi/EFI/Linux", "boot/EFI/Linux", "boot/efi/EFI/Linux", "EFI/Linux")
_MODULE_DIRS = ("lib/modules", "usr/lib/modules")


def resolve_in(root: Path, relative: str) -> Path:
    """``relative`` under ``root``, every symbolic link followed as inside a chroot at ``root``.

    The result need not exist; a loop is an error, like ELOOP.
    """
    pending = [p for p in PurePosixPath(relative).parts if p not in ("/", ".")]
    done: list[str] = []
    hops = 0
    while pending:
        part = pending.pop(0)
        if part == "..":
            if done:
                done.pop()
            continue
        candidate = root.joinpath(*done, part)
        if candidate.is_symlink():
            hops += 1
            if hops > _MAX_SYMLINKS:
                raise InputError(candidate, "too many levels of symbolic links")
            target = os.readlink(candidate)
            if target.startswith("/"):
                done = []
            pending = [p for p in PurePosixPath(target).parts if p not in ("/", ".")] + pending
            continue
        done.append(part)
    return root.joinpath(*done)


@dataclass(frozen=True)
class RuntimeState:
    """What the running kernel says about enforcement; None where it could not be read."""

    sig_enforce: bool | None
    lockdown: str | None  # "none", "integrity" or "confidentiality"
    sig_enforce_file: Path | None  # where it was read from, None when not found
    lockdown_file: Path | None


def _read_text(path: Path) -> str | None:
    try:
        return path.read_text(encoding="ascii", errors="replace").strip()
    except (FileNotFoundError, NotADirectoryError):
        return None
    except PermissionError:
        return None  # securityfs is root-only on some systems: then it is not known
    except OSError as err:
        raise SystemFailure.from_oserror(path, err, "read") from err


def read_runtime(root: Path) -> RuntimeState:
    """``module.sig_enforce`` and the lockdown level, as the kernel at ``root`` exports them.

    kernel/params.c param_get_bool() prints ``Y`` or ``N``;
    security/lockdown/lockdown.c lockdown_read() lists the levels with the
    current one in brackets: ``none [integrity] confidentiality``.
    """
    enforce_file = resolve_in(root, SIG_ENFORCE)
    enforce_text = _read_text(enforce_file)
    sig_enforce = None if enforce_text is None else enforce_text[:1] in ("Y", "y", "1")
    lockdown_file = resolve_in(root, LOCKDOWN)
    lockdown_text = _read_text(lockdown_file)
    lockdown = None
    if lockdown_text is not None:
        current = re.search(r"\[([a-z]+)\]", lockdown_text)
        if current is None:
            raise InputError(lockdown_file, f"no current level in brackets: {lockdown_text!r}")
        lockdown = current.group(1)
    return RuntimeState(
        sig_enforce,
        lockdown,
        enforce_file if enforce_text is not None else None,
        lockdown_file if lockdown_text is not None else None,
    )


@dataclass(frozen=True)
class SystemKernel:
    """The installed kernel ``verify --system`` judges against, and where each part came from."""

    json_skip = ("runtime",)

    root: Path
    kver: str
    image: Path
    config: Path | None
    modules: Path
    other_images: tuple[Path, ...]  # further images of this KVER (the machine boots one)
    runtime: RuntimeState


def _module_dir(root: Path, kver: str) -> Path | None:
    found: list[Path] = []
    for base in _MODULE_DIRS:
        where = resolve_in(root, f"{base}/{kver}")
        if (where / "modules.order").is_file() and not any(
            os.path.samefile(where, seen) for seen in found
        ):
            found.append(where)
    if len(found) > 1:
        raise InputError(
            root,
            f"two module trees for {kver}: {found[0]} and {found[1]} (which one does depmod read?)",
        )
    return found[0] if found else None


def _kernels(root: Path) -> list[str]:
    """Every KVER with an installed module tree (``modules.order``) under ``root``."""
    names: set[str] = set()
    for base in _MODULE_DIRS:
        where = resolve_in(root, base)
        if where.is_dir():
            names.update(
                entry.name
                for entry in where.iterdir()
                if resolve_in(root, f"{base}/{entry.name}/modules.order").is_file()
            )
    return sorted(names)


def _ukis(root: Path, kver: str) -> list[Path]:
    """UKIs named for ``kver``: kernel-install's ``ENTRY-TOKEN-KVER.efi``, with boot counting
    (``+LEFT[-DONE]``) allowed."""
    pattern = re.compile(rf"(?:^|.*-){re.escape(kver)}(?:\+\d+(?:-\d+)?)?\.efi")
    found = []
    for base in _UKI_DIRS:
        where = resolve_in(root, base)
        if where.is_dir():
            for entry in sorted(where.iterdir()):
                target = resolve_in(root, f"{base}/{entry.name}")
                if pattern.fullmatch(entry.name) and target.is_file():
                    found.append(target)
    return found


def _images(root: Path, kver: str) -> list[Path]:
    candidates = [
        f"boot/vmlinuz-{kver}",
        f"boot/vmlinux-{kver}",
        f"usr/lib/modules/{kver}/vmlinuz",
        f"lib/modules/{kver}/vmlinuz",
    ]
    found: list[Path] = []
    for relative in candidates:
        where = resolve_in(root, relative)
        if where.is_file() and not any(os.path.samefile(where, seen) for seen in found):
            found.append(where)
    return found + [u for u in _ukis(root, kver) if not any(os.path.samefile(u, s) for s in found)]


def find_system(
    root: str | os.PathLike[str] | None = None, kver: str | None = None
) -> SystemKernel:
    """The kernel image, config and module tree of KVER under ``root`` (None: the running system).

    KVER defaults to ``uname -r`` only for the running system; under a root
    it is the one kernel installed there, and several are an error naming them.
    """
    base = Path("/") if root is None else Path(root)
    if root is not None and not base.is_dir():
        raise InputError(base, "--root must be a directory (a mounted image)")
    if kver is None:
        if root is None:
            kver = os.uname().release
        else:
            kernels = _kernels(base)
            if not kernels:
                raise InputError(
                    base, "no installed kernel: no lib/modules/*/modules.order or usr/lib/modules"
                )
            if len(kernels) > 1:
                raise UsageError(
                    base, f"{len(kernels)} kernels installed: {', '.join(kernels)}; name one"
                )
            kver = kernels[0]
    if "/" in kver or kver in ("", ".", ".."):
        raise UsageError(None, f"not a kernel release: {kver!r}")
    modules = _module_dir(base, kver)
    if modules is None:
        raise InputError(
            base, f"no modules for {kver}: no lib/modules/{kver} or usr/lib/modules/{kver}"
        )
    images = _images(base, kver)
    if not images:
        raise InputError(
            base,
            f"no kernel image for {kver}: looked for boot/vmlinuz-{kver}, boot/vmlinux-{kver}, "
            f"usr/lib/modules/{kver}/vmlinuz and a UKI under EFI/Linux/",
        )
    config = None
    for relative in (f"boot/config-{kver}", f"usr/lib/modules/{kver}/config"):
        where = resolve_in(base, relative)
        if where.is_file():
            config = where
            break
    return SystemKernel(
        root=base,
        kver=kver,
        image=images[0],
        config=config,
        modules=modules,
        other_images=tuple(images[1:]),
        runtime=read_runtime(base),
    )
