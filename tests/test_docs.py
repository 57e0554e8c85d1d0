"""Every command in the README and docs is run by a test or by CI.

- `keras-ssl ...` in a ```bash block: parsed by the command line's own parser, so a renamed flag or
  an out-of-range value in the docs fails here, naming the page and the command.
- `pip install` and `python -m pytest` in a ```bash block: what `.ci/run` installs and runs (the
  extras named exist in pyproject.toml); `python benchmarks/X.py` / `python examples/X.py`: the
  script exists and defines each flag. Any other command is an error: nothing would check it.
- ```python blocks compile, and every `keras_ssl` name they use resolves (import keras_ssl and
  getattr down the path), as does every `keras_ssl.x.y` quoted in the prose: a renamed API fails.
- Relative links lead to files and headings that exist; the README stays a front door (<= 250 lines).
"""

import ast
import contextlib
import importlib
import inspect
import io
import re
import shlex
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md"] + sorted((ROOT / "docs").glob("*.md"))
README_MAX_LINES = 250
# The README's test command runs this invocation once per backend; .ci/run runs the same.
PYTEST_INVOCATION = "python -m pytest -q -p no:cacheprovider -n 2"
SHELL_WORDS = {"for", "do", "done", "exit", "then", "fi", "if"}
FENCE = re.compile(r"^\s*```(\w*)\s*$")


def _name(page):
    return page.relative_to(ROOT).as_posix()


def _blocks(page):
    """(language, first line number, text) of each fenced block, and the prose outside them."""
    blocks, prose, current = [], [], None
    for number, line in enumerate(page.read_text(encoding="utf-8").splitlines(), 1):
        fence = FENCE.match(line)
        if current is None and fence:
            current = (fence.group(1), number + 1, [])
        elif current is not None and fence and not fence.group(1):
            blocks.append((current[0], current[1], "\n".join(current[2])))
            current = None
        elif current is not None:
            current[2].append(line)
        else:
            prose.append(line)
    assert current is None, f"{_name(page)}: a ``` block opened at line {current[1] - 1} is never closed"
    return blocks, "\n".join(prose)


def _commands(page):
    """(line number, argv) of every simple command in the page's ```bash blocks."""
    found = []
    for language, start, text in _blocks(page)[0]:
        if language not in ("bash", "sh", "shell"):
            continue
        lines = text.split("\n")
        i = 0
        while i < len(lines):
            number, line = start + i, lines[i]
            while line.rstrip().endswith("\\") and i + 1 < len(lines):  # continuation lines
                i += 1
                line = line.rstrip()[:-1] + " " + lines[i]
            i += 1
            # Shell words: quotes removed, `# comments` dropped, `&&`, `||`, `;` and `|` as tokens.
            lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
            lexer.whitespace_split = True
            argv = []
            for token in list(lexer) + [";"]:
                if token and set(token) <= set("&|;()"):  # ends a simple command
                    while argv and (re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", argv[0]) or argv[0] in ("do", "then")):
                        argv = argv[1:]  # KERAS_BACKEND=jax prefixes and loop keywords
                    if argv:
                        found.append((number, argv))
                    argv = []
                else:
                    argv.append(token)
    return found


def _all_commands():
    return [
        pytest.param(page, number, argv, id=f"{_name(page)}:{number}")
        for page in PAGES
        for number, argv in _commands(page)
    ]


def _python_blocks():
    return [
        pytest.param(page, start, text, id=f"{_name(page)}:{start}")
        for page in PAGES
        for language, start, text in _blocks(page)[0]
        if language in ("python", "py")
    ]


# ------------------------------------------------------------------ commands
@pytest.mark.parametrize("page, number, argv", _all_commands())
def test_every_command_is_checked(page, number, argv):
    where = f"{_name(page)}:{number}: `{shlex.join(argv)}`"
    program = argv[0]
    if program == "keras-ssl":
        _check_cli(argv[1:], where)
    elif program == "pip":
        _check_pip(argv[1:], where)
    elif program in ("python", "python3") and argv[1:3] == ["-m", "pytest"]:
        assert PYTEST_INVOCATION in " ".join(argv), f"{where}: not the pytest invocation CI runs ({PYTEST_INVOCATION})"
    elif program in ("python", "python3") and len(argv) > 1 and argv[1].split("/")[0] in ("benchmarks", "examples"):
        _check_script(argv[1], argv[2:], where)
    elif program not in SHELL_WORDS:
        pytest.fail(
            f"{where}: neither a test nor CI runs `{program}` commands; "
            "check it in tests/test_docs.py or leave it out of ```bash blocks"
        )


def _check_cli(argv, where):
    from keras_ssl import cli

    errors = io.StringIO()
    try:
        with contextlib.redirect_stderr(errors), contextlib.redirect_stdout(io.StringIO()):
            cli.build_parser().parse_args(argv)
    except SystemExit as e:
        if e.code:  # argparse exits 2 on an unknown flag or a bad value (0 after --help)
            pytest.fail(f"{where}: keras-ssl's parser refuses it:\n{errors.getvalue().strip()}")


def _extras():
    """The optional-dependency groups of pyproject.toml (read without tomllib, absent on 3.10)."""
    text = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    section = text.split("[project.optional-dependencies]", 1)[1].split("\n[", 1)[0]
    return set(re.findall(r"^([A-Za-z0-9_-]+)\s*=", section, flags=re.MULTILINE))


def _check_pip(args, where):
    assert args and args[0] == "install", f"{where}: only `pip install` is run by CI"
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    for spec in args[1:]:
        if spec.startswith("-"):
            continue
        if spec.startswith(".["):  # pip install -e ".[extra,...]": the project, as CI installs it
            missing = set(spec[2:-1].split(",")) - _extras()
            assert not missing, f"{where}: pyproject.toml has no extra {sorted(missing)}"
            assert re.search(r"pip install .*-e \"?\.\[", ci), f"{where}: .ci/run installs no `-e .[...]`"
        else:
            assert re.search(rf"pip install [^\n]*{re.escape(shlex.quote(spec))}", ci) or re.search(
                rf"pip install [^\n]*\"{re.escape(spec)}\"", ci
            ), f"{where}: .ci/run does not install {spec}"


def _check_script(script, args, where):
    path = ROOT / script
    assert path.is_file(), f"{where}: there is no {script}"
    text = path.read_text(encoding="utf-8")
    # Flags may be defined in a sibling module the script imports (examples/common.py).
    for module in re.findall(r"^(?:from|import) (\w+)", text, flags=re.MULTILINE):
        sibling = path.parent / f"{module}.py"
        if sibling.is_file():
            text += sibling.read_text(encoding="utf-8")
    for flag in (a.split("=")[0] for a in args if a.startswith("--")):
        assert f'"{flag}"' in text, f"{where}: {script} defines no {flag}"


def test_readme_runs_the_test_command_ci_runs():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert PYTEST_INVOCATION in readme, f"README.md lost the test command's `{PYTEST_INVOCATION}`"
    assert PYTEST_INVOCATION in ci, f".ci/run no longer runs `{PYTEST_INVOCATION}`, the README's test command"


def test_commands_are_found():
    # The extraction itself: the README's quick start and CLI examples are seen.
    commands = [argv for page in PAGES for _, argv in _commands(page)]
    assert ["keras-ssl"] in commands  # the demo, after `pip install ... &&`
    assert any(argv[:2] == ["keras-ssl", "pretrain"] and "--width" in argv for argv in commands)
    assert any(argv[:3] == ["python", "-m", "pytest"] for argv in commands)


# -------------------------------------------------------------------- python
def _resolve(path):
    """The object at a dotted `keras_ssl...` path, importing submodules on the way."""
    parts = path.split(".")
    obj = importlib.import_module(parts[0])
    for i, part in enumerate(parts[1:], 1):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            if not inspect.ismodule(obj):
                raise
            obj = importlib.import_module(".".join(parts[: i + 1]))
    return obj


def _keras_ssl_names(tree):
    """Every dotted `keras_ssl` path a module's code uses, through its imports."""
    bound, paths = {}, set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "keras_ssl":
                    paths.add(alias.name)
                    if alias.asname:  # import keras_ssl.x as y
                        bound[alias.asname] = alias.name
                    else:  # import keras_ssl(.x) binds keras_ssl
                        bound["keras_ssl"] = "keras_ssl"
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "keras_ssl":
            for alias in node.names:
                paths.add(f"{node.module}.{alias.name}")
                bound[alias.asname or alias.name] = f"{node.module}.{alias.name}"
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            chain, inner = [], node
            while isinstance(inner, ast.Attribute):
                chain.append(inner.attr)
                inner = inner.value
            if isinstance(inner, ast.Name) and inner.id in bound:
                paths.add(".".join([bound[inner.id]] + chain[::-1]))
    return paths


@pytest.mark.parametrize("page, start, source", _python_blocks())
def test_python_examples_compile_and_use_real_names(page, start, source):
    where = f"{_name(page)}:{start}"
    tree = compile(source, where, "exec", flags=ast.PyCF_ONLY_AST)
    compile(tree, where, "exec")
    for path in sorted(_keras_ssl_names(tree)):
        try:
            _resolve(path)
        except (AttributeError, ImportError) as e:
            pytest.fail(f"{where}: the example uses `{path}`, which does not exist ({e})")


@pytest.mark.parametrize("page", PAGES, ids=_name)
def test_keras_ssl_names_in_the_prose_exist(page):
    prose = _blocks(page)[1]
    spans = re.findall(r"`([^`\n]+)`", prose)
    names = {m for span in spans for m in re.findall(r"\bkeras_ssl(?:\.[A-Za-z_]\w*)+", span)}
    missing = []
    for path in sorted(names):
        try:
            _resolve(path)
        except (AttributeError, ImportError):
            missing.append(path)
    assert not missing, f"{_name(page)} names {missing}, which do not exist"


def test_python_names_are_found():
    tree = ast.parse(
        "import keras_ssl\nfrom keras_ssl import backbones as b\nfrom keras_ssl.layers import X\n"
        "keras_ssl.losses.nt_xent(a)\nb.resnet18().encoder\nX.y\n"
    )
    assert _keras_ssl_names(tree) == {
        "keras_ssl",
        "keras_ssl.backbones",
        "keras_ssl.layers.X",
        "keras_ssl.losses",
        "keras_ssl.losses.nt_xent",
        "keras_ssl.backbones.resnet18",
        "keras_ssl.layers.X.y",
    }


# --------------------------------------------------------------------- pages
def _slug(heading):
    """GitHub's anchor for a heading."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def _anchors(page):
    prose = _blocks(page)[1]
    return {_slug(m) for m in re.findall(r"^#{1,6} (.+)$", prose, flags=re.MULTILINE)}


@pytest.mark.parametrize("page", PAGES + [ROOT / "CHANGELOG.md"], ids=_name)
def test_links_lead_somewhere(page):
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", _blocks(page)[1]):
        if re.match(r"^[a-z]+:", target):
            continue  # https://, mailto:
        file, _, anchor = target.partition("#")
        path = (page.parent / file).resolve() if file else page
        if not path.exists():
            broken.append(f"{target} (no file)")
        elif anchor and path.suffix == ".md" and anchor not in _anchors(path):
            broken.append(f"{target} (no heading #{anchor})")
    assert not broken, f"{_name(page)}: broken links {broken}"


def test_readme_is_a_front_door():
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES, (
        f"README.md has {len(lines)} lines (at most {README_MAX_LINES}): move details to docs/"
    )
    for page in ("methods", "benchmarks", "scaling", "runs", "write-a-method"):
        assert (ROOT / "docs" / f"{page}.md").is_file(), f"docs/{page}.md is missing"
