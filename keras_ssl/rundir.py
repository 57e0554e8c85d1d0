"""The run directory of `keras-ssl`: checked, locked, written file by file atomically.

Every file goes through a temporary file in the same directory and a rename,
so a crash never leaves a half-written file where the old one was; the
`.lock` file names the process that owns the directory.
"""

import json
import os
import tempfile


def write_json(path, obj):
    """Writes `obj` as JSON to `path` through a temporary file and a rename.

    Args:
        path: the file to write.
        obj: a JSON-serialisable object.

    Example:
        >>> write_json("runs/demo/history.json", {"loss": [1.0]})
    """
    tmp = path + ".tmp"
    try:
        with open(tmp, "w") as f:
            json.dump(obj, f, indent=2)
        os.replace(tmp, path)
    except OSError as e:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise SystemExit(f"keras-ssl: could not write {path}: {e.strerror or e}; any earlier file there is "
                         "unchanged.") from None


def save_model(model, path):
    """`model.save(path)` through a temporary file, with the umask's permissions.

    Args:
        model: a Keras model.
        path: the `.keras` file to write.

    Example:
        >>> save_model(model.encoder, "runs/demo/encoder.keras")
    """
    try:
        fd, tmp = tempfile.mkstemp(suffix=".keras", dir=os.path.dirname(path) or ".")
        os.close(fd)
        try:
            model.save(tmp)
            os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes it owner-only
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
    except OSError as e:
        raise SystemExit(f"keras-ssl: could not write {path}: {e.strerror or e}; any earlier file there is "
                         "unchanged.") from None


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def check_writable_dir(path, flag="--output"):
    """Creates `path` (with parents) and writes a probe file: a one-line error before any work.

    Args:
        path: the directory.
        flag: the command-line flag named in the error.

    Example:
        >>> check_writable_dir("runs/demo")
    """
    if os.path.exists(path) and not os.path.isdir(path):
        raise SystemExit(f"keras-ssl: {flag} {path} is a file, not a directory.")
    try:
        os.makedirs(path, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=path, prefix=".write-test-")
        os.close(fd)
        os.remove(probe)
    except OSError as e:
        raise SystemExit(f"keras-ssl: cannot write to {flag} {path}: {e.strerror or e}.") from None


class RunLock:
    """`<run dir>/.lock`, holding the pid: a second `pretrain` on the directory fails naming the first.

    A lock whose process is gone (killed) is stale and taken over.

    Args:
        folder: the run directory.

    Example:
        >>> with RunLock("runs/demo"):
        ...     train()
    """

    def __init__(self, folder):
        self.folder, self.path = folder, os.path.join(folder, ".lock")

    def __enter__(self):
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
            except FileExistsError:
                owner = _lock_owner(self.path)
                if owner is not None and _alive(owner):
                    raise SystemExit(
                        f"keras-ssl: {self.folder} is in use by another keras-ssl pretrain (pid {owner}); "
                        "wait for it to finish or choose another --output.") from None
                try:  # its process is gone (killed): the lock is stale
                    os.remove(self.path)
                except FileNotFoundError:
                    pass
                continue
            with os.fdopen(fd, "w") as f:
                f.write(str(os.getpid()))
            return self
        raise SystemExit(f"keras-ssl: could not lock {self.folder} ({self.path}).")

    def __exit__(self, *exc):
        if _lock_owner(self.path) == os.getpid():
            os.remove(self.path)


def _lock_owner(path):
    try:
        with open(path) as f:
            return int(f.read().strip() or 0) or None
    except (OSError, ValueError):
        return None


def _alive(pid):
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True
