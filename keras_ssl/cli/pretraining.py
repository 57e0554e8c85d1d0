"""`keras-ssl pretrain`, and `run_pretrain`, the same command called from Python.

A run: lock --output, decide whether a checkpoint there resumes, then data,
encoder and method, fit with kNN monitoring and checkpoints, and publish the
run's files all at once (`rundir`), the checkpoint removed last. With many
processes (`launch`) every process trains and process 0 alone writes.
"""

import json
import os
import sys
import time

import keras

from keras_ssl import distribute, rundir
from keras_ssl.backend import processes
from keras_ssl.callbacks import StopOnNaN
from keras_ssl.checkpoints import BackupAndRestore, list_checkpoints, read_state
from keras_ssl.cli import launch
from keras_ssl.cli.building import _build_model, _check_method_data, _option_items, check_method_flags
from keras_ssl.cli.commands import _knn, _raw_pixel_knn, _write_plots
from keras_ssl.cli.parser import build_parser
from keras_ssl.cli.rundata import DATA_RECORD, _data_spec, _open_data
from keras_ssl.methods import METHODS
from keras_ssl.monitors import KNNMonitor

CHECKPOINT = "checkpoint"
# Flags that do not change what is trained: a checkpoint resumes across them.
_NOT_THE_RUN = (
    "command",
    "embedding",
    "output",
    "overwrite",
    "verbose",
    "no_plots",
    "no_resume",
    "checkpoint_every",
    "knn_every",
    "eval_limit",
    "divergence",
    "num_processes",  # the global batch is the same: a run resumes on another number of processes
)


def pretrain(args):
    """Runs `keras-ssl pretrain`: data, encoder, method, fit, kNN, files.

    Args:
        args: the Namespace of `build_parser()` for the `pretrain` command.

    Returns:
        0, once `args.output` holds encoder.keras, model.keras,
        history.json, data.json and (unless --no-plots) the figures.

    Example:
        >>> from keras_ssl.cli import build_parser, pretrain
        >>> args = build_parser().parse_args(["pretrain", "--limit", "64", "--epochs", "1", "--batch-size", "16",
        ...                                   "--knn-every", "0", "--no-plots", "--verbose", "0", "--output", "runs/x"])
        >>> pretrain(args)
        backend ... | data digits: 64 train images ...
        wrote runs/x/encoder.keras, model.keras and history.json in runs/x
        0
        >>> sorted(os.listdir("runs/x"))
        ['data.json', 'encoder.keras', 'history.json', 'model.keras', 'run.json']
    """
    if args.method not in METHODS:
        raise SystemExit(f"keras-ssl: unknown --method {args.method!r}; choose from {sorted(METHODS)}.")
    method, encoder_path = METHODS[args.method], os.path.join(args.output, "encoder.keras")
    check_method_flags(args, method)  # --option and --local-crops: refused before any work
    if launch.launching(args):
        return launch.launch(args, method)
    team = launch.join(args, method)  # first: the backend's runtime starts before anything is built
    if not team.chief:  # reads what process 0 locks and writes
        return _pretrain(args, method, encoder_path, _resume_plan(args, encoder_path, team), team)
    created = not os.path.exists(args.output)
    rundir.check_writable_dir(args.output)
    try:
        with rundir.RunLock(args.output, handed_by=team.handed_by):
            resume = _resume_plan(args, encoder_path, team)
            return _pretrain(args, method, encoder_path, resume, team)
    except rundir.WriteError as e:  # a full disk: one line naming the file; the earlier files are intact
        raise SystemExit(f"keras-ssl: {e}") from None
    except BaseException:
        if created and not os.listdir(args.output):  # failed before writing anything: leave no trace
            os.rmdir(args.output)
        raise


def run_pretrain(output, **options):
    """Runs `keras-ssl pretrain --output OUTPUT --flag value ...` from Python.

    Each keyword is a flag of `keras-ssl pretrain`, dashes written as
    underscores (`batch_size=64` is `--batch-size 64`); a switch such as
    `no_plots` takes True or False; a flag left out, or None, keeps its
    default. The values go through the command's parser, so one it refuses
    (`epochs=0`) stops the call as it stops the command: usage and message
    on stderr, then SystemExit. `option` (`--option`, repeatable) takes a
    dict of the method's constructor arguments, `option={"momentum": 0.99}`,
    or a list of "NAME=VALUE" texts.

    Args:
        output: the run directory (`--output`).
        **options: the other flags of `keras-ssl pretrain`; `value_range`
            may be a (low, high) pair.

    Returns:
        What the command returns: 0, once `output` holds the run's files.

    Raises:
        TypeError: a keyword that is no flag of `keras-ssl pretrain`, or a
            switch given something other than True or False.
        SystemExit: a value the parser refuses, or a run that cannot start.

    Example:
        >>> import json
        >>> from keras_ssl.cli import run_pretrain
        >>> run_pretrain("runs/digits", data="digits", epochs=1, limit=64, batch_size=16, knn_every=0,
        ...              no_plots=True, verbose=0)
        backend ... | data digits: 64 train images ...
        wrote runs/digits/encoder.keras, model.keras and history.json in runs/digits
        0
        >>> with open("runs/digits/history.json") as f:
        ...     record = json.load(f)
        >>> record["method"], record["epochs"], len(record["loss"])
        ('simclr', 1, 1)
    """
    return pretrain(_pretrain_args(output, **options))


def _pretrain_args(output, **options):
    """The Namespace that `keras-ssl pretrain --output OUTPUT` and `options` as flags give."""
    parser = build_parser()
    defaults = vars(parser.parse_args(["pretrain"]))
    flags = sorted(set(defaults) - {"command", "output"})
    argv = ["pretrain", f"--output={os.fspath(output)}"]  # --flag=value: a value may start with "-"
    for name, value in options.items():
        if name not in flags:
            raise TypeError(
                f"run_pretrain() got an unexpected keyword argument {name!r}; the flags of "
                f"`keras-ssl pretrain` are {', '.join(flags)}."
            )
        flag = "--" + name.replace("_", "-")
        if name == "option":  # repeatable: one --option per item, a dict's values written as Python literals
            items = [value] if isinstance(value, str) else value or ()
            items = [f"{k}={v!r}" for k, v in items.items()] if isinstance(items, dict) else items
            argv += [f"--option={item}" for item in items]
        elif defaults[name] is False:  # a switch (store_true): present or not
            if not isinstance(value, bool):
                raise TypeError(f"run_pretrain(): {name} is the switch {flag}: pass True or False, got {value!r}.")
            argv += [flag] if value else []
        elif value is not None:
            text = ",".join(str(v) for v in value) if isinstance(value, (list, tuple)) else str(value)
            argv.append(f"{flag}={text}")
    return parser.parse_args(argv)


# ------------------------------------------------------------------ resuming
def _command(args):
    """The flags that define a run, as recorded next to its checkpoint."""
    command = {k: v for k, v in sorted(vars(args).items()) if k not in _NOT_THE_RUN}
    # --option's values, not its text: `momentum=0.99` is `momentum=.99`, and the order of the items is no matter.
    command["option"] = _option_items(args.option)
    return command


def _saved_command(args):
    """The flags recorded next to the checkpoint in --output, or None."""
    path = os.path.join(args.output, CHECKPOINT, "command.json")
    try:
        with open(path) as f:
            saved = json.load(f)
    except (OSError, ValueError):
        return None
    # A flag added since the run was recorded (--recipe, --option...) had its default there.
    return {**json.loads(json.dumps(_command(build_parser().parse_args(["pretrain"])))), **saved}


def _same_command_checkpoint(args):
    """Whether --output holds an interrupted run of this very command."""
    return (
        not args.no_resume
        and bool(list_checkpoints(os.path.join(args.output, CHECKPOINT)))
        and _saved_command(args) == json.loads(json.dumps(_command(args)))
    )


def _resume_plan(args, encoder_path, team):
    """The checkpoint state to resume from (None: start over), after clearing one that does not apply.

    An interrupted run of this command resumes; one of another command, or
    a finished run, is replaced only with --overwrite.
    """
    folder = os.path.join(args.output, CHECKPOINT)
    if _same_command_checkpoint(args):
        return read_state(list_checkpoints(folder)[0])
    saved = _saved_command(args) or {}
    if list_checkpoints(folder) and not args.no_resume and not args.overwrite:
        now = json.loads(json.dumps(_command(args)))
        changed = [
            f"--{k.replace('_', '-')} {saved.get(k)} there, {now.get(k)} here"
            for k in sorted(set(now) | set(saved))
            if saved.get(k) != now.get(k)
        ]
        raise SystemExit(
            f"keras-ssl: {folder} holds the checkpoint of an interrupted run of another command "
            f"({'; '.join(changed) or 'no record of it'}). Rerun that command to resume it, or "
            "pass --overwrite to start over."
        )
    if os.path.exists(encoder_path) and not args.overwrite:
        raise SystemExit(f"keras-ssl: {encoder_path} exists; pass --overwrite to replace it.")
    if team.chief:
        rundir.remove_dir(folder)
    return None


# ------------------------------------------------------------------ the run
def _pretrain(args, method, encoder_path, resume, team):
    """The run, once --output is locked and its checkpoint sorted out: model, fit, scores, files (process 0)."""
    keras.utils.set_random_seed(args.seed)
    say = print if team.chief else lambda *a: None
    spec = _data_spec(args)
    per_sample = "labels" if method.needs_labels else ("indices" if method.needs_indices else None)
    d = _open_data(spec, batch_size=args.batch_size, eval_limit=args.eval_limit, training=True, per_sample=per_sample)
    d.fit, value_range = launch.fit_images(team, d.fit, spec["value_range"])
    backbone = args.backbone or method.default_backbone
    say(
        f"backend {distribute.backend()} | data {args.data}: {d.size} train images "
        f"{d.shape}{' (streamed)' if d.streamed else ''}, {len(d.test[0])} test | method {args.method} "
        f"| backbone {backbone}" + (f" | {team.count} processes, {args.batch_size} images a step" * (team.count > 1))
    )
    _check_method_data(args.method, method, d)
    with team.scope():
        model = _build_model(args, method, backbone, d.shape, value_range, d.size)
    # kNN embeds with `predict`, which every process would have to run on its own rows: done after, alone.
    alone = team.count == 1
    raw, raw_note = _raw_pixel_knn(*d.train, *d.test, value_range) if alone else (None, "")
    before = _knn(model.feature_encoder, d, value_range) if alone else None
    if before is not None:
        print(f"kNN top-1 of the randomly initialised encoder: {before:.4f}")
    elif not alone:
        say(f"no kNN scores or figures with {team.count} processes: keras-ssl evaluate and plot give them after")
    start = time.time()
    backup = _fit(args, model, d, value_range, resume, team)
    seconds = time.time() - start
    if not team.chief:
        return 0
    after = _knn(model.feature_encoder, d, value_range) if alone else None
    # A momentum target (DINO's teacher) lags its online encoder in short runs: both are printed.
    online, online_note = None, ""
    if after is not None and model.feature_encoder is not model.encoder:
        online = _knn(model.encoder, d, value_range)
        online_note = f"; that is its {model.evaluated_encoder}, as the paper evaluates; online encoder {online:.4f}"
    if after is not None:
        print(
            f"kNN top-1 after {args.epochs} epochs of {args.method}: {after:.4f} "
            f"(random init {before:.4f}) in {seconds:.0f} s{online_note}"
        )
        print(
            f"raw-pixel kNN top-1 {raw:.4f}{raw_note} | random-init encoder {before:.4f} | trained "
            f"{args.method} encoder {after:.4f}  (weighted kNN, k=200, T=0.1, same images)"
        )

    run_id = f"{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
    scores = {"knn_raw_pixels": raw, "knn_before": before, "knn_after": after, "seconds": seconds}
    if online is not None:
        scores["knn_after_online"] = online
    record = _history_record(args, backup.epoch_logs, scores, d.shape, run_id, resume)
    with processes.alone():  # process 0 only: on JAX, saving must not span the others' devices
        _publish(args, run_id, model, record, spec, d, plots=not args.no_plots and alone)
    print(f"wrote {encoder_path}, model.keras and history.json in {args.output}")
    return 0


def _fit(args, model, d, value_range, resume, team):
    """Trains with kNN monitoring, checkpoints (resuming `resume`) and divergence checks; the checkpoint callback."""
    (x_train, y_train), (x_test, y_test) = d.train, d.test
    callbacks = []
    every = args.knn_every if args.knn_every is not None else (1 if d.size <= 20000 else 5)
    if every > 0 and y_train is not None and y_test is not None and team.count == 1:
        callbacks.append(
            KNNMonitor(x_test, y_test, x_train=x_train, y_train=y_train, every=every, value_range=value_range)
        )
    checkpoint_dir = os.path.join(args.output, CHECKPOINT)
    if team.chief:
        os.makedirs(checkpoint_dir, exist_ok=True)
        rundir.write_json(os.path.join(checkpoint_dir, "command.json"), _command(args))
    # The same callbacks in every process; one starting over restores nothing, whatever process 0 still clears.
    folder = checkpoint_dir if team.chief or resume is not None else os.path.join(checkpoint_dir, ".none")
    backup = BackupAndRestore(folder, save_freq=args.checkpoint_every or "epoch", delete_checkpoint=False)
    callbacks.append(backup)
    if args.divergence:
        callbacks.insert(0, StopOnNaN(weights_every=args.checkpoint_every, divergence=args.divergence))
    if resume is not None and team.chief:
        done = resume["epoch"] >= args.epochs
        print(
            f"resuming from epoch {min(resume['epoch'] + 1, args.epochs)} of {args.epochs}"
            + (f", after its step {resume['batch']}" if resume["batch"] else "")
            + (" (training was complete; writing the run's files)" if done else "")
            + f" (checkpoint in {checkpoint_dir})"
        )
    verbose = args.verbose if args.verbose is not None else (1 if sys.stdout.isatty() else 2)
    x, batch_size = launch.fit_rows(team, d.fit, None if d.streamed else args.batch_size, model.seed)
    model.fit(
        x,
        d.train[1] if model.needs_labels and not d.streamed else None,  # a stream yields its labels
        epochs=args.epochs,
        batch_size=batch_size,
        steps_per_epoch=args.steps_per_epoch,
        verbose=verbose if team.chief else 0,
        callbacks=callbacks,
    )
    return backup


def _history_record(args, epoch_logs, scores, image_shape, run_id, resume):
    """history.json: every epoch's logs (those before a resume included), the scores and the run's flags."""
    record = {}
    for logs in epoch_logs:
        for key, value in logs.items():
            record.setdefault(key, []).append(value)
    record.update(
        **scores,
        backend=distribute.backend(),
        method=args.method,
        data=args.data,
        epochs=args.epochs,
        batch_size=args.batch_size,
        recipe=args.recipe,
        limit=args.limit,
        steps_per_epoch=args.steps_per_epoch,
        image_size=list(image_shape[:2]),
        run_id=run_id,
        resumed_from=None if resume is None else [resume["epoch"], resume["batch"]],
    )
    return record


def _publish(args, run_id, model, record, spec, d, plots=True):
    """Writes the run's files into --output at once, then removes the checkpoint.

    Every file is staged, then published as one run; the checkpoint goes
    last, so a kill anywhere before leaves a run to resume (or, while
    publishing, one to finish).
    """
    stage = rundir.staging_dir(args.output)
    # The encoder the paper evaluates (DINO's teacher, I-JEPA's target encoder); the online one too where it differs.
    rundir.save_model(model.feature_encoder, os.path.join(stage, "encoder.keras"))
    if model.feature_encoder is not model.encoder:
        rundir.save_model(model.encoder, os.path.join(stage, "online_encoder.keras"))
    rundir.save_model(model, os.path.join(stage, "model.keras"))
    rundir.write_json(os.path.join(stage, "history.json"), record)
    rundir.write_json(os.path.join(stage, DATA_RECORD), spec)
    if plots:
        _write_plots(
            stage,
            record,
            model.feature_encoder,
            d.train,
            d.test,
            model.views,
            spec["value_range"],
            embedding=args.embedding,
        )
    rundir.publish(args.output, run_id)
    rundir.remove_dir(os.path.join(args.output, CHECKPOINT))
