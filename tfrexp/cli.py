"""The `tfrexp` entrypoint (also `python -m tfrexp`): a Hydra app over the top-level conf/ directory.

It composes and checks the config before TensorFlow is imported, so a mistake costs well under a
second; user-facing errors are printed as one line (HYDRA_FULL_ERROR=1 shows the traceback).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from tfrexp import config
from tfrexp.errors import TfrexpError

config.register_schemas()

# The configs live in the project's top-level conf/, beside this package (installed editable).
CONF_DIR = str(Path(__file__).resolve().parent.parent / "conf")


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="config")
def main(cfg: DictConfig) -> float:
    try:
        settings = config.to_settings(cfg)
        from tfrexp.experiment import RunContext, run  # imports TensorFlow: only once the config is good

        hydra_cfg = HydraConfig.get()
        context = RunContext(
            resolved_config=OmegaConf.to_container(cfg, resolve=True, enum_to_str=True),
            config_yaml=OmegaConf.to_yaml(cfg, resolve=True),
            model_name=hydra_cfg.runtime.choices.get("model") or "model",
            run_dir=Path(hydra_cfg.runtime.output_dir),
        )
        return run(settings, context)
    except TfrexpError as error:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        print(f"tfrexp: error: {error}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
