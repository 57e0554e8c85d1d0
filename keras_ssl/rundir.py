"""The run directory of `keras-ssl`: checked, locked, and published as one run.

Every file goes through a temporary file in the same directory and a rename
(`write_atomically`), so a crash or a full disk never leaves a half-written
file where the old one was, and a write that fails says which file in one
line (`WriteError`); a run's files are staged and published together
(`publish`), so a reader never sees files of two runs; the `.lock` file
names the process that owns the directory.
"""

import errno
import hashlib
import json
import os
import pathlib
import shutil
import tempfile


class WriteError(OSError):
    """A file that could not be written (disk full, read-only); the earlier file at its path is unchanged.

    Example:
        >>> import errno
        >>> from keras_ssl.rundir import WriteError
        >>> error = WriteError("runs/a.json", OSError(errno.ENOSPC, "Can't close file"))
        >>> print(error)
        could not write runs/a.json: No space left on device (Can't close file); any earlier file there is unchanged.
        >>> error.errno == errno.ENOSPC, error.filename
        (True, 'runs/a.json')
    """

    def __init__(self, path, cause, kept="any earlier file there is unchanged"):
        code = getattr(cause, "errno", None)
        reason = os.strerror(code) if code else ""
        detail = getattr(cause, "strerror", None) or str(cause)
        if detail and detail != reason:
            reason = f"{reason} ({detail})" if reason else detail
        super().__init__(code, reason)
        self.filename, self.kept = os.fspath(path), kept
        self.message = " ".join(f"could not write {self.filename}: {reason}; {kept}.".split())

    def __str__(self):
        return self.message


def write_atomically(path, write):
    """Calls `write(tmp)` on a temporary file next to `path`, then renames it over `path`.

    A failure (disk full, a kill) leaves the earlier file at `path` whole and
    raises `WriteError`. The file gets the umask's permissions and is flushed
    before the rename; the temporary name ends with the file's own name, for
    writers that check the extension (`model.save`, `savefig`).

    Args:
        path: the file to write.
        write: a function of a path that writes the file there.

    Example:
        >>> import errno
        >>> from keras_ssl.rundir import WriteError, write_atomically
        >>> def notes(path):
        ...     with open(path, "w") as f:
        ...         f.write("first")
        >>> write_atomically("notes.txt", notes)
        >>> def disk_full(path):
        ...     with open(path, "w") as f:
        ...         f.write("half")
        ...     raise OSError(errno.ENOSPC, "No space left on device")
        >>> try:
        ...     write_atomically("notes.txt", disk_full)
        ... except WriteError as error:
        ...     print(error)
        could not write notes.txt: No space left on device; any earlier file there is unchanged.
        >>> open("notes.txt").read(), [name for name in os.listdir(".") if name.startswith(".tmp-")]
        ('first', [])
    """
    path, tmp = os.fspath(path), None
    try:
        fd, tmp = tempfile.mkstemp(
            prefix=".tmp-", suffix="-" + os.path.basename(path), dir=os.path.dirname(path) or "."
        )
        os.close(fd)
        write(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes it owner-only
        _flush(tmp)
        os.replace(tmp, path)
    except OSError as e:
        raise WriteError(path, e) from None
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.remove(tmp)


def _flush(path):
    """Flushes a file to disk: a full disk may answer only here (delayed allocation, NFS)."""
    with open(path, "rb") as f:
        try:
            os.fsync(f.fileno())
        except OSError as e:
            if e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EIO):  # lost data; others: a mount without fsync
                raise


def write_json(path, obj):
    """Writes `obj` as JSON to `path` through a temporary file and a rename.

    Args:
        path: the file to write.
        obj: a JSON-serialisable object.

    Example:
        >>> import json
        >>> from keras_ssl.rundir import write_json
        >>> os.makedirs("runs/json")
        >>> write_json("runs/json/history.json", {"loss": [1.0]})
        >>> with open("runs/json/history.json") as f:
        ...     json.load(f)
        {'loss': [1.0]}
    """
    text = json.dumps(obj, indent=2)  # not serialisable: a TypeError before anything is written
    try:
        write_atomically(path, lambda tmp: pathlib.Path(tmp).write_text(text))
    except WriteError as e:
        raise SystemExit(f"keras-ssl: {e}") from None


def save_model(model, path):
    """`model.save(path)` through a temporary file, with the umask's permissions.

    Args:
        model: a Keras model.
        path: the `.keras` file to write.

    Example:
        >>> from keras_ssl.rundir import save_model
        >>> os.makedirs("runs/model")
        >>> save_model(encoder, "runs/model/encoder.keras")
        >>> os.listdir("runs/model")  # no temporary file left behind
        ['encoder.keras']
    """
    try:
        write_atomically(path, model.save)
    except WriteError as e:
        raise SystemExit(f"keras-ssl: {e}") from None


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
        >>> from keras_ssl.rundir import check_writable_dir
        >>> check_writable_dir("runs/new")
        >>> os.path.isdir("runs/new")
        True
        >>> open("notes.txt", "w").close()
        >>> check_writable_dir("notes.txt")
        Traceback (most recent call last):
        ...
        SystemExit: keras-ssl: --output notes.txt is a file, not a directory.
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
        handed_by: the pid of the launcher (`--num-processes`) whose lock this process takes over.

    Example:
        >>> from keras_ssl.rundir import RunLock
        >>> os.makedirs("runs/locked")
        >>> with RunLock("runs/locked"):
        ...     os.listdir("runs/locked")  # train here
        ['.lock']
        >>> os.listdir("runs/locked")
        []
        >>> with RunLock("runs/locked"):
        ...     with RunLock("runs/locked"):  # a second pretrain on the same directory
        ...         pass
        Traceback (most recent call last):
        ...
        SystemExit: keras-ssl: runs/locked is in use by another keras-ssl pretrain (pid ...); wait for it ...
    """

    def __init__(self, folder, handed_by=None):
        self.folder, self.path, self.handed_by = folder, os.path.join(folder, ".lock"), handed_by

    def __enter__(self):
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
            except FileExistsError:
                owner = _lock_owner(self.path)
                if owner is not None and owner == self.handed_by:  # one rename: never unlocked meanwhile
                    write_atomically(self.path, lambda tmp: pathlib.Path(tmp).write_text(str(os.getpid())))
                    return self
                if owner is not None and _alive(owner):
                    raise SystemExit(
                        f"keras-ssl: {self.folder} is in use by another keras-ssl pretrain (pid {owner}); "
                        "wait for it to finish or choose another --output."
                    ) from None
                try:  # its process is gone (killed): the lock is stale
                    os.remove(self.path)
                except FileNotFoundError:
                    pass
                continue
            try:
                with os.fdopen(fd, "w") as f:
                    f.write(str(os.getpid()))
            except OSError as e:  # a full disk: the first write of a run
                os.remove(self.path)
                raise SystemExit(f"keras-ssl: {WriteError(self.path, e, 'nothing was trained')}") from None
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
    try:
        os.kill(pid, 0)  # this process, or another's (PermissionError): alive
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


# A run directory is published as one run: the files are written to STAGING,
# then MARKER is created, the files are moved in, MANIFEST (the run id and
# each file's SHA-256) is written, and MARKER is removed. A reader that finds
# MARKER, or a file whose hash is not the manifest's, refuses the directory.
STAGING, MARKER, MANIFEST = ".staging", ".publishing", "run.json"
RUN_FILES = (
    "encoder.keras",
    "model.keras",
    "history.json",
    "data.json",
    "history.png",
    "views.png",
    "embedding.png",
    "retrieval.png",
)


def staging_dir(folder):
    """An empty `<folder>/.staging` to write a run's files into before `publish`.

    Example:
        >>> from keras_ssl.rundir import staging_dir, write_json
        >>> stage = staging_dir("runs/staged")
        >>> stage, os.listdir(stage)
        ('runs/staged/.staging', [])
        >>> write_json(os.path.join(stage, "history.json"), {"loss": [1.0]})  # then `publish`
    """
    path = os.path.join(folder, STAGING)
    if os.path.exists(path):
        shutil.rmtree(path)
    os.makedirs(path)
    return path


def publish(folder, run_id):
    """Moves every staged file into `folder` as one run, with a manifest.

    A kill before the marker is written leaves the previous run untouched;
    after it, readers refuse the directory until the same `pretrain` is
    rerun. Files of an earlier run that this run did not write (figures
    after `--no-plots`) are removed.

    Args:
        folder: the run directory.
        run_id: names the run in `run.json`.

    Example:
        >>> import json
        >>> from keras_ssl.rundir import publish, staging_dir, write_json
        >>> stage = staging_dir("runs/published")
        >>> write_json(os.path.join(stage, "history.json"), {"loss": [1.0]})
        >>> publish("runs/published", "20261204-071500-4242")
        >>> sorted(os.listdir("runs/published"))
        ['history.json', 'run.json']
        >>> with open("runs/published/run.json") as f:
        ...     json.load(f)["run_id"]
        '20261204-071500-4242'
    """
    staging = os.path.join(folder, STAGING)
    names = sorted(os.listdir(staging))
    manifest = {"run_id": run_id, "files": {name: _sha256(os.path.join(staging, name)) for name in names}}
    write_json(os.path.join(folder, MARKER), {"run_id": run_id})
    for name in names:
        _move(os.path.join(staging, name), os.path.join(folder, name))
    for name in RUN_FILES:
        if name not in names and os.path.exists(os.path.join(folder, name)):
            os.remove(os.path.join(folder, name))
    write_json(os.path.join(folder, MANIFEST), manifest)
    os.remove(os.path.join(folder, MARKER))
    shutil.rmtree(staging)


def remove_dir(path):
    """Removes a directory so that no kill leaves a part of it under its name (rename, then delete).

    Example:
        >>> from keras_ssl.rundir import remove_dir
        >>> os.makedirs("runs/old/checkpoint/ckpt-000001-000000000")
        >>> remove_dir("runs/old/checkpoint")
        >>> os.listdir("runs/old")
        []
    """
    if not os.path.exists(path):
        return
    trash = os.path.join(os.path.dirname(os.path.abspath(path)), ".trash-" + os.path.basename(path))
    if os.path.exists(trash):
        shutil.rmtree(trash)
    os.rename(path, trash)
    shutil.rmtree(trash)


def _move(source, target):
    """One file of `publish` into place (a rename, atomic)."""
    os.replace(source, target)


def check_complete(path):
    """A one-line error when `path` (a run directory or a file in one) is not one whole run.

    Args:
        path: the run directory, or one of its files, about to be read.

    Example:
        >>> from keras_ssl.rundir import check_complete, publish, staging_dir, write_json
        >>> write_json(os.path.join(staging_dir("runs/checked"), "history.json"), {"loss": [1.0]})
        >>> publish("runs/checked", "run-1")
        >>> check_complete("runs/checked/history.json")  # the file run.json names: no error
        >>> write_json("runs/checked/history.json", {"loss": [0.5]})  # replaced behind the run's back
        >>> check_complete("runs/checked/history.json")
        Traceback (most recent call last):
        ...
        SystemExit: keras-ssl: runs/checked/history.json is not the file of run run-1 (run.json); ...
    """
    folder = path if os.path.isdir(path) else os.path.dirname(os.path.abspath(path))
    if os.path.exists(os.path.join(folder, MARKER)):
        raise SystemExit(
            f"keras-ssl: {folder} was being written when its pretrain stopped; rerun that "
            "pretrain command to finish it."
        )
    manifest_path = os.path.join(folder, MANIFEST)
    if os.path.isdir(path) or not os.path.isfile(manifest_path):
        return
    with open(manifest_path) as f:
        manifest = json.load(f)
    expected = manifest.get("files", {}).get(os.path.basename(path))
    if expected is not None and _sha256(path) != expected:
        raise SystemExit(
            f"keras-ssl: {path} is not the file of run {manifest.get('run_id')} (run.json); "
            "another run or a person replaced it."
        )


def _sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
