"""The package as a user installs it: the wheel's contents, its console scripts, a run outside
the repository; and the files that say what it depends on (requirements, constraints, licence)."""

import configparser
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import warnings
import zipfile
from pathlib import Path

import pytest

from advseg_jax import configs
from advseg_jax import fast_compile

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = ("advseg-train", "advseg-evaluate", "advseg-predict", "advseg-prepare-data",
           "advseg-benchmark", "advseg-summary", "advseg-ablations", "advseg-results")
_SCRIPT_TIMEOUT_S = 240


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _requirement_lines(text: str) -> list:
    return [line.split("#", 1)[0].strip() for line in text.splitlines()
            if line.split("#", 1)[0].strip()]


def _setup_cfg() -> configparser.ConfigParser:
    parser = configparser.ConfigParser()
    parser.read(REPO / "setup.cfg")
    return parser


def test_shipped_configs_resolve_by_name_and_paths_pass_through(tmp_path):
    assert configs.names() == ["default", "folder", "stanford_background", "stanford_cpu",
                               "stanford_semi", "voc", "voc_semi"]
    voc = configs.path("voc")
    assert os.path.isfile(voc) and Path(voc).parent == REPO / "advseg_jax" / "configs"
    assert configs.resolve("voc.py") == voc
    assert configs.resolve("voc:arg") == voc + ":arg"  # ml_collections' get_config argument.
    assert configs.resolve("configs/voc.py") == "configs/voc.py"  # A path stays a path.
    own = tmp_path / "mine"  # A file named like no shipped config, given without a suffix.
    own.write_text("")
    assert configs.resolve(str(own)) == str(own)
    argv = configs.resolve_argv(["prog", "--config=default", "--config.seed=3", "--config", "voc",
                                 "--workdir=voc"])
    assert argv == ["prog", f"--config={configs.path('default')}", "--config.seed=3", "--config",
                    voc, "--workdir=voc"]
    shipped = (r"\['default', 'folder', 'stanford_background', 'stanford_cpu', 'stanford_semi', "
               r"'voc', 'voc_semi'\]")
    with pytest.raises(SystemExit, match=r"'vocc'.*" + shipped):
        configs.resolve_argv(["prog", "--config=vocc"])
    assert configs.name_of(voc) == "voc"
    assert configs.name_of("configs/voc.py") == "configs/voc.py"


def test_config_shims_return_the_shipped_configs():
    for name in configs.names():
        spec = importlib.util.spec_from_file_location(f"shim_{name}",
                                                      REPO / "configs" / f"{name}.py")
        shim = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(shim)
        shipped = importlib.import_module(f"advseg_jax.configs.{name}").get_config()
        assert shim.get_config().to_dict() == shipped.to_dict()


def test_install_requires_is_the_runtime_part_of_requirements():
    lines = _requirement_lines((REPO / "requirements.txt").read_text())
    runtime = lines[:lines.index("pytest")]  # Tests' requirements start at pytest.
    declared = _requirement_lines(_setup_cfg()["options"]["install_requires"])
    assert [d.replace(" ", "") for d in declared] == [r.replace(" ", "") for r in runtime]


def test_constraints_pin_every_direct_requirement():
    """Every requirement has an exact pin. A pin that differs from the installed version (a
    newer release installed by a fresh `pip install -r requirements.txt`) is a warning, not a
    failure: the suite must not turn red because a dependency published a release."""
    from importlib import metadata
    pins = {}
    for line in _requirement_lines((REPO / "constraints.txt").read_text()):
        name, version = line.split("==")
        pins[_normalise(name)] = version
    for line in _requirement_lines((REPO / "requirements.txt").read_text()):
        name = _normalise(re.split(r"[<>=;\s\[]", line, maxsplit=1)[0])
        if name == "tensorflow":  # The non-x86 alternative to tensorflow-cpu: not tested here.
            continue
        assert name in pins, f"{name} (requirements.txt) has no pin in constraints.txt"
    for name, version in pins.items():
        assert re.fullmatch(r"[0-9][0-9A-Za-z.+!-]*", version), f"{name}=={version}?"
        if metadata.version(name) != version:
            warnings.warn(f"constraints.txt pins {name}=={version} but {metadata.version(name)} "
                          "is installed; if the suite passes, refresh it with "
                          "python .ci/freeze_constraints.py > constraints.txt", stacklevel=1)


def test_license_is_the_apache_2_0_text_setup_cfg_declares():
    text = (REPO / "LICENSE").read_text()
    assert _setup_cfg()["metadata"]["license"] == "Apache-2.0"
    assert "Apache License\n                           Version 2.0, January 2004" in text
    assert "END OF TERMS AND CONDITIONS" in text
    assert len(re.findall(r"^\s+\d\. [A-Z]", text, re.M)) == 9  # Sections 1-9 of the terms.


def _copy_source(destination: Path) -> Path:
    """The checkout without build outputs, so the wheel is built from sources only."""
    ignore = shutil.ignore_patterns(".git", "__pycache__", "build", "dist", "*.egg-info",
                                    "workdirs", ".pytest_cache", "results")
    shutil.copytree(REPO, destination, ignore=ignore)
    return destination


def _run(command, cwd, env, timeout=_SCRIPT_TIMEOUT_S) -> subprocess.CompletedProcess:
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)


@pytest.mark.slow
def test_wheel_installs_and_trains_outside_the_repository(tmp_path, data_dir):
    source = _copy_source(tmp_path / "src")
    wheels = tmp_path / "wheels"
    built = _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                  "--no-index", "-w", str(wheels), str(source)], tmp_path, dict(os.environ))
    assert built.returncode == 0, built.stdout + built.stderr
    (wheel,) = wheels.glob("advseg_jax-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = {f"advseg_jax/{p.relative_to(REPO / 'advseg_jax')}"
                for p in (REPO / "advseg_jax").rglob("*.py")}
    expected |= {f"advseg_jax/experiments/{p.name}" for p in (REPO / "experiments").glob("*.py")}
    assert expected <= names, sorted(expected - names)
    assert not any(n.startswith(("configs/", "experiments/", "tests/")) for n in names)
    assert any(n.startswith("advseg_jax/data/dummy_data/voc2012") for n in names)
    assert any(n.endswith("dist-info/LICENSE") for n in names)

    target = tmp_path / "site"
    installed = _run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index",
                      "--target", str(target), str(wheel)], tmp_path, dict(os.environ))
    assert installed.returncode == 0, installed.stdout + installed.stderr
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    env = dict(os.environ, PYTHONPATH=str(target), JAX_PLATFORMS="cpu",
               XLA_FLAGS=fast_compile.with_fast_compile(  # As the suite (conftest).
                       "--xla_force_host_platform_device_count=1"))
    origin = _run([sys.executable, "-c", "import advseg_jax; print(advseg_jax.__file__)"],
                  outside, env)
    assert origin.stdout.strip().startswith(str(target)), origin.stdout + origin.stderr

    helps = {name: subprocess.Popen([str(target / "bin" / name), "--help"], cwd=outside,
                                    env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                    text=True) for name in SCRIPTS}
    for name, proc in helps.items():
        output, _ = proc.communicate(timeout=_SCRIPT_TIMEOUT_S)
        assert proc.returncode == 0, f"{name} --help:\n{output[-3000:]}"
        assert "flags:" in output, f"{name} --help printed no flags:\n{output[-3000:]}"

    workdir = outside / "run"
    trained = _run([str(target / "bin" / "advseg-train"), "--config=default",
                    f"--workdir={workdir}", f"--config.data_dir={data_dir}",
                    "--config.num_train_steps=2", "--config.batch_size=2",
                    "--config.eval_batch_size=16", "--config.segmentor.width=8",
                    "--config.adversary.width_divisor=16", "--config.log_every_steps=1",
                    "--config.eval_every_steps=2", "--config.checkpoint_every_steps=2",
                    "--config.num_train_eval_examples=0", "--config.input.shuffle_buffer=16"],
                   outside, env)
    assert trained.returncode == 0, trained.stdout[-3000:] + trained.stderr[-5000:]
    result = json.loads((workdir / "eval_results.json").read_text())
    assert result["step"] == 2
    assert json.loads((workdir / "config.json").read_text())["segmentor"]["width"] == 8


def test_code_passes_the_repository_lint_configuration():
    """pyproject.toml's ruff rules; ruff is a development tool, so absent means skipped."""
    ruff = shutil.which("ruff")
    if ruff is None:
        pytest.skip("ruff is not installed (pip install ruff); it is not a runtime dependency.")
    result = subprocess.run([ruff, "check", "--output-format", "concise", str(REPO)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
