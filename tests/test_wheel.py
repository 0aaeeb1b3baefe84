"""A wheel built from the repo, installed in a fresh venv, runs from an empty folder outside the repo with a
dataset YAML of the user's own in ./conf/: the config tree ships inside the package.

The venv is new and holds only the wheel; the dependencies (TensorFlow, MLflow, ...) are borrowed from the
test's own environment through a path file, to spare a 2 GB install. That environment's editable tfrexp
is not visible there (path files are not read in borrowed folders), and the test checks which tfrexp ran.
"""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from helpers import REPO

pytestmark = pytest.mark.slow

USER_DATASET = """\
# A dataset of the user's own: MNIST under another name, from the same files.
defaults:
  - mnist
  - _self_

name: digits
"""


@pytest.fixture(scope="module")
def wheel_venv(tmp_path_factory):
    root = tmp_path_factory.mktemp("wheel")
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(root / "dist"),
                            str(REPO)], capture_output=True, text=True)
    assert built.returncode == 0, built.stderr[-3000:]
    [wheel] = (root / "dist").glob("tfrexp-*.whl")
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    Path(site, "borrowed-dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    installed = subprocess.run([str(python), "-m", "pip", "install", "--no-deps", "--quiet", str(wheel)],
                               capture_output=True, text=True)
    assert installed.returncode == 0, installed.stderr[-3000:]
    return venv


def _tfrexp(venv: Path, cwd: Path, *arguments: str) -> subprocess.CompletedProcess:
    env = {key: value for key, value in os.environ.items() if key not in {"PYTHONPATH", "TFREXP_OUTPUT_DIR"}}
    return subprocess.run([str(venv / "bin" / "tfrexp"), *arguments], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600)


def test_the_installed_wheel_runs_a_users_dataset_from_an_empty_folder(wheel_venv, tmp_path, data_dir):
    where = subprocess.run([str(wheel_venv / "bin" / "python"), "-c", "import tfrexp; print(tfrexp.__file__)"],
                           cwd=tmp_path, capture_output=True, text=True, check=True).stdout
    assert where.startswith(str(wheel_venv)), f"the wheel's tfrexp must run, not the checkout's: {where}"
    work = tmp_path / "my-project"
    (work / "conf" / "dataset").mkdir(parents=True)
    (work / "conf" / "dataset" / "digits.yaml").write_text(USER_DATASET)

    shown = _tfrexp(wheel_venv, work, "--cfg", "job", "dataset=digits")
    assert shown.returncode == 0, shown.stderr[-3000:]
    assert "name: digits" in shown.stdout and "_target_: tfrexp.models.convnets.build_cnn" in shown.stdout

    trained = _tfrexp(wheel_venv, work, "dataset=digits", "dataset.max_examples_per_split=500", "model=cnn_small",
                      "trainer.epochs=1", "trainer.verbose=0", "tracking.log_model=false")
    assert trained.returncode == 0, trained.stderr[-3000:]
    [version] = [path for path in (work / "outputs" / "records" / "digits").iterdir() if path.is_dir()]
    assert (version / "manifest.json").is_file()
    client = MlflowClient(f"sqlite:///{work}/outputs/mlflow.db")
    [run] = client.search_runs([client.get_experiment_by_name("tfrexp").experiment_id])
    assert run.info.status == "FINISHED" and run.info.run_name == "digits-cnn_small"
    assert run.data.params["records.num_examples.train"] == "450"


def test_the_wheel_holds_every_config_file_of_the_tree(wheel_venv):
    """Every option, the search's sampler and pruner ones too, which sit a level deeper than the others."""
    site = subprocess.run([str(wheel_venv / "bin" / "python"), "-c",
                           "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    shipped = {path.relative_to(Path(site)) for path in Path(site, "tfrexp", "conf").rglob("*.yaml")}
    tree = {path.relative_to(REPO) for path in (REPO / "tfrexp" / "conf").rglob("*.yaml")}
    assert shipped == tree and Path("tfrexp/conf/hydra/sweeper/pruner/median.yaml") in tree
