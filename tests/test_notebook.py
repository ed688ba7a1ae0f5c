"""experiments/colab_tpu.ipynb: valid, and every command in it would parse.

Commands are checked statically, without running them: each module or script exists, each
--flag is one the module defines (read from its source with `ast`, since importing several
CLI modules into one process would define their flags twice), each --config names an existing
file, and each --config.KEY exists in that config.
"""

import ast
import importlib.util
import os
import re
import shlex
import sys

import nbformat
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOK = os.path.join(REPO, "experiments", "colab_tpu.ipynb")
# Flags absl's app.run defines for every program; the notebook may use them too.
ABSL_FLAGS = {"help", "helpfull", "helpshort", "helpxml", "flagfile", "logtostderr",
              "alsologtostderr", "verbosity", "v", "log_dir"}


@pytest.fixture(scope="module")
def notebook():
    return nbformat.read(NOTEBOOK, as_version=4)


def shell_commands(notebook):
    """`!` lines of the code cells, backslash continuations joined, `!` dropped."""
    commands = []
    for cell in notebook.cells:
        if cell.cell_type != "code":
            continue
        text = re.sub(r"\\\n\s*", " ", cell.source)
        commands += [line.strip()[1:] for line in text.splitlines() if line.strip().startswith("!")]
    return commands


def program_invocations(notebook):
    """(program path, argv after it) for each `python -m advseg_jax.X` / `python experiments/Y`."""
    found = []
    for command in shell_commands(notebook):
        for part in re.split(r"&&|;", command):
            argv = shlex.split(part)
            if len(argv) > 2 and argv[0] == "python" and argv[1] == "-m":
                module = argv[2]
                if module.startswith("advseg_jax."):
                    found.append((os.path.join(REPO, *module.split(".")) + ".py", argv[3:]))
            elif len(argv) > 1 and argv[0] == "python" and argv[1].startswith("experiments/"):
                found.append((os.path.join(REPO, argv[1]), argv[2:]))
    return found


def defined_flags(path):
    """Names passed to flags.DEFINE_* / config_flags.DEFINE_* anywhere in the file."""
    with open(path) as f:
        tree = ast.parse(f.read())
    names = set()
    for node in ast.walk(tree):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and node.func.attr.startswith("DEFINE") and node.args
                and isinstance(node.args[0], ast.Constant)):
            names.add(node.args[0].value)
    return names


def load_config(path):
    if REPO not in sys.path:
        sys.path.insert(0, REPO)  # Config files import `configs.default`.
    spec = importlib.util.spec_from_file_location("notebook_config", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()


def has_key(config, dotted):
    node = config
    for part in dotted.split("."):
        if part not in node:
            return False
        node = node[part]
    return True


def test_notebook_is_valid(notebook):
    nbformat.validate(notebook)
    assert notebook.metadata.get("accelerator") == "TPU"


def test_notebook_covers_the_workflow(notebook):
    source = "\n".join(cell.source for cell in notebook.cells)
    for needle in ("pip install -q -r requirements.txt && pip install -q -e .", "git clone",
                   "jax.devices()", "%load_ext tensorboard", "%tensorboard --logdir",
                   "--config.dtype=bfloat16"):
        assert needle in source, needle
    modules = {os.path.relpath(path, REPO) for path, _ in program_invocations(notebook)}
    assert {"advseg_jax/prepare_data.py", "advseg_jax/main.py", "advseg_jax/evaluate.py",
            "advseg_jax/predict.py", "experiments/ablations.py"} <= modules


def test_every_command_names_real_programs_flags_and_config_keys(notebook):
    invocations = program_invocations(notebook)
    assert invocations
    for path, argv in invocations:
        assert os.path.isfile(path), path
        allowed = defined_flags(path) | ABSL_FLAGS
        config = None
        for arg in argv:
            assert arg.startswith("--"), (path, arg)
            name, _, value = arg[2:].partition("=")
            if name == "config":
                config_path = os.path.join(REPO, value)
                assert os.path.isfile(config_path), (path, arg)
                config = load_config(config_path)
        for arg in argv:
            name = arg[2:].partition("=")[0]
            if name.startswith("config."):
                assert "config" in allowed and config is not None, (path, arg)
                assert has_key(config, name[len("config."):]), (path, arg)
            else:
                assert name in allowed, (path, arg, sorted(allowed))


def test_install_is_jax_for_tpu_then_the_requirements_as_the_readme_says(notebook):
    """JAX for the TPU first, then the open requirements (jax>=0.7 keeps it); constraints.txt
    pins the CPU jaxlib of the test host, which would replace the TPU build, so never here."""
    installs = [command for command in shell_commands(notebook) if "pip install" in command]
    order = [next(i for i, c in enumerate(installs) if needle in c)
             for needle in ('"jax[tpu]"', "-r requirements.txt", "-e .")]
    assert order == sorted(order), installs
    assert not any("constraints.txt" in command for command in installs), installs
    with open(os.path.join(REPO, "README.md")) as f:
        readme = f.read()
    tpu_row = next(line for line in readme.splitlines() if line.startswith("| Cloud TPU VM"))
    assert 'pip install -U "jax[tpu]"' in tpu_row and "requirements.txt" in tpu_row
    assert "experiments/colab_tpu.ipynb" in readme
