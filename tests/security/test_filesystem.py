"""Host files: reading them, writing them, and the symlink / hardlink / rename detours.

Each test runs twice: with bubblewrap's mount namespace (host paths are simply absent)
and with Landlock alone (host paths exist but every access outside the rules fails) —
the second is what runs where user namespaces are blocked.
"""

from __future__ import annotations

import os
import pwd
import stat
import tempfile
import uuid
from pathlib import Path

import pytest

import rlmx
from rlmx.sandbox import IsolatedSandbox
from tests.security._helpers import (
    CONTEXT,
    EACCES,
    ENOENT,
    EPERM,
    EROFS,
    EXDEV,
    REPO,
    Opener,
    attempt,
    blocked,
    context_file,
    hidden,
    run,
    scratch_dir,
    texts,
)

SECRET = "host-secret-" + uuid.uuid4().hex


def _readonly_outcome(fs_mode: str) -> str:
    """Writing to a path the sandbox may only read: a read-only mount, or Landlock."""
    return EROFS if fs_mode == "namespaces" else EACCES


@pytest.fixture
def victim_file(tmp_path: Path) -> Path:
    """A host file outside every sandbox directory; it must never change."""
    path = tmp_path / "victim.txt"
    path.write_text("original host content\n")
    os.utime(path, (1_000_000, 1_000_000))
    return path


def _unchanged(path: Path) -> bool:
    st = path.stat()
    return (
        path.read_text() == "original host content\n"
        and st.st_mtime == 1_000_000
        and st.st_nlink == 1
        and stat.S_IMODE(st.st_mode) == 0o644
    )


# ---------------------------------------------------------------- reading host files


async def test_read_etc_passwd(fs_sandbox: IsolatedSandbox) -> None:
    r = await run(fs_sandbox, attempt("data = open('/etc/passwd').read()", then="print(data)"))
    assert r.stdout == blocked(hidden(fs_sandbox, "/etc/passwd"))
    assert "root:" not in texts(r)


async def test_read_etc_shadow(fs_sandbox: IsolatedSandbox) -> None:
    r = await run(fs_sandbox, attempt("data = open('/etc/shadow').read()", then="print(data)"))
    assert r.stdout == blocked(hidden(fs_sandbox, "/etc/shadow"))
    assert "root:" not in texts(r)


async def test_read_secret_in_home_like_dir(
    fs_sandbox: IsolatedSandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "home"
    (home / ".config").mkdir(parents=True)
    secret_file = home / ".config" / "token"
    secret_file.write_text(SECRET)
    monkeypatch.setenv("HOME", str(home))
    code = attempt(f"data = open({str(secret_file)!r}).read()", then="print(data)")
    r = await run(fs_sandbox, code)
    assert r.stdout == blocked(hidden(fs_sandbox, secret_file))
    assert SECRET not in texts(r)
    # ``~`` inside the sandbox is its scratch directory, not the host's home.
    r = await run(fs_sandbox, "import os\nprint(os.path.expanduser('~'))")
    assert r.stdout == f"{await scratch_dir(fs_sandbox)}\n"


async def test_read_real_home_bashrc(fs_sandbox: IsolatedSandbox) -> None:
    home = Path(pwd.getpwuid(os.getuid()).pw_dir)
    bashrc = home / ".bashrc"
    if not bashrc.is_file():
        pytest.skip(f"{bashrc} does not exist on this machine")
    r = await run(fs_sandbox, attempt(f"data = open({str(bashrc)!r}).read()", then="print(data)"))
    assert r.stdout == blocked(hidden(fs_sandbox, bashrc))


async def test_list_real_home(fs_sandbox: IsolatedSandbox) -> None:
    home = pwd.getpwuid(os.getuid()).pw_dir
    r = await run(fs_sandbox, attempt(f"names = os.listdir({home!r})", then="print(names)"))
    assert r.stdout == blocked(hidden(fs_sandbox, home)), "the listing must not be printed"


async def test_read_project_pyproject(fs_sandbox: IsolatedSandbox) -> None:
    path = REPO / "pyproject.toml"
    r = await run(fs_sandbox, attempt(f"data = open({str(path)!r}).read()", then="print(data)"))
    assert r.stdout == blocked(hidden(fs_sandbox, path))
    assert "[project]" not in texts(r)


async def test_list_project_tests_dir(fs_sandbox: IsolatedSandbox) -> None:
    path = REPO / "tests"
    r = await run(fs_sandbox, attempt(f"names = os.listdir({str(path)!r})", then="print(names)"))
    assert r.stdout == blocked(hidden(fs_sandbox, path))
    assert "conftest.py" not in texts(r)


async def test_read_project_test_source(fs_sandbox: IsolatedSandbox) -> None:
    path = Path(__file__)  # this very file
    r = await run(fs_sandbox, attempt(f"data = open({str(path)!r}).read()", then="print(data)"))
    assert r.stdout == blocked(hidden(fs_sandbox, path))
    assert "def test_read_project_test_source" not in texts(r)


async def test_read_project_git_config(fs_sandbox: IsolatedSandbox) -> None:
    path = REPO / ".git" / "config"
    if not path.is_file():
        pytest.skip("not a git checkout")
    r = await run(fs_sandbox, attempt(f"data = open({str(path)!r}).read()", then="print(data)"))
    assert r.stdout == blocked(hidden(fs_sandbox, path))
    assert "[core]" not in texts(r)


async def test_list_root_dir(fs_sandbox: IsolatedSandbox) -> None:
    r = await run(fs_sandbox, attempt("names = os.listdir('/')", then="print(names)"))
    assert r.stdout == blocked(EACCES)


async def test_walk_filesystem_finds_nothing_outside(fs_sandbox: IsolatedSandbox) -> None:
    """os.walk('/') swallows errors: it must come back without any host directory."""
    code = "import os\nprint(sorted(d for d, _, _ in os.walk('/')))"
    r = await run(fs_sandbox, code)
    assert r.error is None
    assert r.stdout == "[]\n"


# ---------------------------------------------------------------- writing outside scratch


@pytest.mark.parametrize("mode", ["w", "a", "r+"])
async def test_overwrite_host_file(
    fs_sandbox: IsolatedSandbox, victim_file: Path, mode: str
) -> None:
    code = attempt(f"open({str(victim_file)!r}, {mode!r}).write('pwned')")
    r = await run(fs_sandbox, code)
    assert r.stdout == blocked(hidden(fs_sandbox, victim_file))
    assert _unchanged(victim_file)


async def test_create_file_in_host_dir(fs_sandbox: IsolatedSandbox, tmp_path: Path) -> None:
    target = tmp_path / "planted.txt"
    r = await run(fs_sandbox, attempt(f"open({str(target)!r}, 'x').write('pwned')"))
    assert r.stdout == blocked(hidden(fs_sandbox, target))
    assert not target.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == []


async def test_mkdir_in_host_dir(fs_sandbox: IsolatedSandbox, tmp_path: Path) -> None:
    target = tmp_path / "planted-dir"
    r = await run(fs_sandbox, attempt(f"os.mkdir({str(target)!r})"))
    assert r.stdout == blocked(hidden(fs_sandbox, target))
    assert not target.exists()


async def test_create_file_in_readable_package_dir(
    fs_sandbox: IsolatedSandbox, fs_mode: str
) -> None:
    """The rlmx package is readable by the worker, never writable."""
    target = Path(rlmx.__file__).resolve().parent / f"planted_{uuid.uuid4().hex}.py"
    code = attempt(f"os.close(os.open({str(target)!r}, os.O_CREAT | os.O_EXCL | os.O_WRONLY))")
    try:
        r = await run(fs_sandbox, code)
        assert r.stdout == blocked(_readonly_outcome(fs_mode))
        assert not target.exists()
    finally:
        target.unlink(missing_ok=True)


async def test_overwrite_own_context_file(fs_sandbox: IsolatedSandbox, fs_mode: str) -> None:
    ctx = await context_file(fs_sandbox)
    r = await run(fs_sandbox, attempt(f"open({str(ctx)!r}, 'w').write('forged')"))
    assert r.stdout == blocked(_readonly_outcome(fs_mode))
    assert ctx.read_text() == CONTEXT


_METADATA_OPS = pytest.mark.parametrize(
    ("op", "call"),
    [
        ("chmod", "os.chmod(TARGET, 0o777)"),
        ("utime", "os.utime(TARGET, (0, 0))"),
        ("chown", "os.chown(TARGET, 65534, 65534)"),
        ("setxattr", "os.setxattr(TARGET, 'user.rlmx', b'planted')"),
    ],
    ids=["chmod", "utime", "chown", "setxattr"],
)


async def _metadata_attack(
    request: pytest.FixtureRequest,
    sandbox: IsolatedSandbox,
    fs_mode: str,
    op: str,
    call: str,
    target: Path,
    expected: str,
) -> None:
    before = target.stat()
    r = await run(sandbox, f"TARGET = {str(target)!r}\n" + attempt(call))
    after = target.stat()
    # ctime moves with any change of mode, times, owner or extended attributes.
    assert (after.st_mode, after.st_mtime_ns, after.st_ctime_ns, after.st_uid) == (
        before.st_mode,
        before.st_mtime_ns,
        before.st_ctime_ns,
        before.st_uid,
    )
    # Landlock has no right for metadata: without a mount namespace (where host files are
    # hidden or read-only) seccomp refuses the path-based chmod/chown/utime/xattr calls.
    if fs_mode == "landlock-only":
        expected = EPERM
    assert r.stdout == blocked(expected)


@_METADATA_OPS
async def test_change_metadata_of_host_file(
    request: pytest.FixtureRequest,
    fs_sandbox: IsolatedSandbox,
    fs_mode: str,
    victim_file: Path,
    op: str,
    call: str,
) -> None:
    """A host file outside every sandbox directory (mode, times, owner)."""
    expected = hidden(fs_sandbox, victim_file)
    await _metadata_attack(request, fs_sandbox, fs_mode, op, call, victim_file, expected)


@_METADATA_OPS
async def test_change_metadata_of_readonly_host_file(
    request: pytest.FixtureRequest,
    fs_sandbox: IsolatedSandbox,
    fs_mode: str,
    op: str,
    call: str,
) -> None:
    """A host file the worker may read (its context file; equally the interpreter,
    site-packages, an editable rlmx checkout)."""
    ctx = await context_file(fs_sandbox)
    expected = _readonly_outcome(fs_mode)
    await _metadata_attack(request, fs_sandbox, fs_mode, op, call, ctx, expected)


@pytest.mark.parametrize("probe", ["os.stat", "os.path.exists", "os.access"])
async def test_existence_of_host_files_is_hidden(
    request: pytest.FixtureRequest, fs_sandbox: IsolatedSandbox, fs_mode: str, probe: str
) -> None:
    """Which host files exist (and their size, owner, times) is host data too."""
    if fs_mode == "landlock-only":
        request.applymarker(
            pytest.mark.xfail(
                strict=True,
                reason=(
                    "HOLE (information leak): without bubblewrap, stat/access/readlink on "
                    "any host path work (Landlock only checks opening), so the worker learns "
                    "which files exist, their size, owner and times (~/.ssh/id_rsa, the "
                    "project tree...)"
                ),
            )
        )
    secret = REPO / "pyproject.toml"
    call = {
        "os.stat": f"print(os.stat({str(secret)!r}).st_size)",
        "os.path.exists": f"print(os.path.exists({str(secret)!r}))",
        "os.access": f"print(os.access({str(secret)!r}, os.F_OK))",
    }[probe]
    r = await run(fs_sandbox, attempt(call, then="pass"))
    if probe == "os.stat":
        assert r.stdout == blocked(hidden(fs_sandbox, secret))
    else:
        assert r.stdout == "False\n"


# ---------------------------------------------------------------- links and renames


async def test_symlink_to_etc_passwd_then_read(fs_sandbox: IsolatedSandbox) -> None:
    code = attempt(
        "os.symlink('/etc/passwd', 'passwd-link')\ndata = open('passwd-link').read()",
        then="print(data)",
    )
    r = await run(fs_sandbox, code)
    assert r.stdout == blocked(hidden(fs_sandbox, "/etc/passwd"))
    assert "root:" not in texts(r)


async def test_symlink_to_host_file_then_write(
    fs_sandbox: IsolatedSandbox, victim_file: Path
) -> None:
    code = attempt(
        f"os.symlink({str(victim_file)!r}, 'victim-link')\nopen('victim-link', 'w').write('pwned')"
    )
    r = await run(fs_sandbox, code)
    assert r.stdout == blocked(hidden(fs_sandbox, victim_file))
    assert _unchanged(victim_file)


async def test_symlink_to_host_dir_then_create(fs_sandbox: IsolatedSandbox, tmp_path: Path) -> None:
    code = attempt(
        f"os.symlink({str(tmp_path)!r}, 'dir-link')\nopen('dir-link/planted', 'w').write('x')"
    )
    r = await run(fs_sandbox, code)
    assert r.stdout == blocked(hidden(fs_sandbox, tmp_path / "planted"))
    assert not (tmp_path / "planted").exists()


async def test_hardlink_host_file_into_scratch(
    fs_sandbox: IsolatedSandbox, fs_mode: str, victim_file: Path
) -> None:
    r = await run(fs_sandbox, attempt(f"os.link({str(victim_file)!r}, 'hard')"))
    # Landlock refuses a link out of its rules with EXDEV (a "different domain").
    assert r.stdout == blocked(ENOENT if fs_mode == "namespaces" else EXDEV)
    assert _unchanged(victim_file)


async def test_hardlink_etc_passwd_into_scratch(fs_sandbox: IsolatedSandbox, fs_mode: str) -> None:
    code = attempt("os.link('/etc/passwd', 'hard')\ndata = open('hard').read()", then="print(data)")
    r = await run(fs_sandbox, code)
    assert r.stdout == blocked(ENOENT if fs_mode == "namespaces" else EXDEV)
    assert "root:" not in texts(r)


async def test_rename_host_file_into_scratch(
    fs_sandbox: IsolatedSandbox, victim_file: Path
) -> None:
    r = await run(fs_sandbox, attempt(f"os.rename({str(victim_file)!r}, 'stolen')"))
    assert r.stdout == blocked(hidden(fs_sandbox, victim_file))
    assert _unchanged(victim_file)


async def test_plant_symlink_where_host_writes_the_context(
    fs_sandbox: IsolatedSandbox, fs_mode: str, victim_file: Path
) -> None:
    """The host writes ``context.tmp`` next to the context: a symlink there would
    redirect its next write to any host file."""
    planted = (await context_file(fs_sandbox)).with_name("context.tmp")
    r = await run(fs_sandbox, attempt(f"os.symlink({str(victim_file)!r}, {str(planted)!r})"))
    assert r.stdout == blocked(_readonly_outcome(fs_mode))
    await fs_sandbox.load_context("the second context")
    assert _unchanged(victim_file)
    r = await run(fs_sandbox, "print(context)")
    assert r.stdout == "the second context\n"


async def test_symlinks_in_scratch_do_not_redirect_host_cleanup(
    open_sandbox: Opener, fs_mode: str, tmp_path: Path, victim_file: Path
) -> None:
    """Closing the sandbox deletes its scratch; links in it must not take host files along."""
    sandbox = await open_sandbox(use_bwrap=fs_mode == "namespaces")
    code = (
        f"os.symlink({str(tmp_path)!r}, 'dir-link')\n"
        f"os.symlink({str(victim_file)!r}, 'file-link')\n"
        "os.mkdir('sub')\n"
        f"os.symlink({str(tmp_path)!r}, 'sub/nested-link')\n"
        "print(sorted(os.listdir('.')))"
    )
    r = await run(sandbox, "import os\n" + code)
    assert r.stdout == "['dir-link', 'file-link', 'sub']\n"
    scratch = await scratch_dir(sandbox)
    await sandbox.aclose()
    assert not scratch.exists()
    assert _unchanged(victim_file)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["victim.txt"]


# ---------------------------------------------------------------- setuid files on the host


def _reachable_by_others(path: Path) -> bool:
    """Whether another local user can reach ``path`` (every parent searchable by others)."""
    return all(p.stat().st_mode & stat.S_IXOTH for p in path.parents)


@pytest.mark.parametrize(
    "make",
    [
        "shutil.copy('/usr/bin/id', 'tool')\nos.chmod('tool', 0o4755)",
        "shutil.copy('/usr/bin/id', 'tool')\nos.chmod('tool', 0o2755)",
        "os.close(os.open('tool', os.O_CREAT | os.O_WRONLY, 0o6755))",
        "os.mkdir('tool')\nos.chmod('tool', 0o2777)",
    ],
    ids=["chmod-setuid", "chmod-setgid", "open-mode", "setgid-dir"],
)
async def test_setuid_file_in_scratch(fs_sandbox: IsolatedSandbox, make: str) -> None:
    """Scratch is on the host's filesystem: a setuid file there would run with the host
    user's identity (root's, when rlmx runs as root) for anyone who can reach it."""
    r = await run(fs_sandbox, "import shutil\n" + attempt(make))
    assert r.stdout == blocked(EPERM)
    tool = await scratch_dir(fs_sandbox) / "tool"
    if tool.exists():  # the copy before the refused chmod
        assert not tool.stat().st_mode & (stat.S_ISUID | stat.S_ISGID)


async def test_scratch_unreachable_by_other_host_users(fs_sandbox: IsolatedSandbox) -> None:
    """Whatever the worker leaves in scratch, no other local user can get at it."""
    r = await run(fs_sandbox, "open('left-behind', 'w').write('x')")
    assert r.error is None
    assert not _reachable_by_others(await scratch_dir(fs_sandbox) / "left-behind")


# ---------------------------------------------------------------- other sandboxes, /tmp


async def test_other_sandbox_scratch_is_unreadable(open_sandbox: Opener, fs_mode: str) -> None:
    first = await open_sandbox(use_bwrap=fs_mode == "namespaces")
    second = await open_sandbox(use_bwrap=fs_mode == "namespaces")
    r = await run(
        first, f"open('secret.txt', 'w').write({SECRET!r})\nimport os\nprint(os.getcwd())"
    )
    first_scratch = r.stdout.strip()
    assert first_scratch == str(await scratch_dir(first))
    target = f"{first_scratch}/secret.txt"
    r = await run(second, attempt(f"data = open({target!r}).read()", then="print(data)"))
    assert r.stdout == blocked(hidden(second, target))
    assert SECRET not in texts(r)
    r = await run(second, attempt(f"names = os.listdir({first_scratch!r})", then="print(names)"))
    assert r.stdout == blocked(hidden(second, first_scratch))


async def test_other_sandbox_scratch_is_unwritable(open_sandbox: Opener, fs_mode: str) -> None:
    first = await open_sandbox(use_bwrap=fs_mode == "namespaces")
    second = await open_sandbox(use_bwrap=fs_mode == "namespaces")
    target = (await scratch_dir(first)) / "planted.py"
    r = await run(second, attempt(f"open({str(target)!r}, 'w').write('import evil')"))
    assert r.stdout == blocked(hidden(second, target))
    assert not target.exists()
    r = await run(first, "import os\nprint(os.listdir('.'))")
    assert r.stdout == "[]\n"


async def test_tmp_is_private_read(fs_sandbox: IsolatedSandbox) -> None:
    with tempfile.NamedTemporaryFile("w", dir="/tmp", prefix="rlmx-security-") as f:
        f.write(SECRET)
        f.flush()
        r = await run(fs_sandbox, attempt(f"data = open({f.name!r}).read()", then="print(data)"))
        assert r.stdout == blocked(hidden(fs_sandbox, f.name))
    assert SECRET not in texts(r)


async def test_tmp_is_private_list(fs_sandbox: IsolatedSandbox) -> None:
    r = await run(fs_sandbox, attempt("names = os.listdir('/tmp')", then="print(names)"))
    assert r.stdout == blocked(EACCES)


async def test_tmp_is_private_write(fs_sandbox: IsolatedSandbox) -> None:
    target = Path("/tmp") / f"rlmx-security-{uuid.uuid4().hex}"
    try:
        r = await run(fs_sandbox, attempt(f"open({str(target)!r}, 'w').write('x')"))
        # With namespaces /tmp is the sandbox's own (empty) tmpfs: Landlock still refuses.
        assert r.stdout == blocked(EACCES)
        assert not target.exists()
    finally:
        target.unlink(missing_ok=True)


async def test_host_shared_memory(fs_sandbox: IsolatedSandbox) -> None:
    """POSIX shared memory lives in /dev/shm: out of reach (it is the host's own without
    namespaces)."""
    code = "from multiprocessing import shared_memory\n" + attempt(
        "shared_memory.SharedMemory(name='rlmx-security', create=True, size=4096)"
    )
    r = await run(fs_sandbox, code)
    assert r.stdout == blocked(EACCES)
    assert not Path("/dev/shm/rlmx-security").exists()


async def test_scratch_itself_is_writable(fs_sandbox: IsolatedSandbox) -> None:
    """The control: the one place the worker may write works, so the refusals above are
    the confinement at work, not a broken sandbox."""
    r = await run(fs_sandbox, "open('notes.txt', 'w').write('ok')\nprint(open('notes.txt').read())")
    assert r.stdout == "ok\n"
    assert ((await scratch_dir(fs_sandbox)) / "notes.txt").read_text() == "ok"
