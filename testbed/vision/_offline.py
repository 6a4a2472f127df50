"""Make Ultralytics run offline and quietly, from a configuration folder the testbed owns.

Ultralytics reads its environment once, at import, so ``configure_ultralytics``
must run before the first ``import ultralytics``; ``import_ultralytics`` does both.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from types import ModuleType

_FONT_NAMES = ("Arial.ttf", "Arial.Unicode.ttf")
_DISABLED_SETTINGS = {
    "sync": False,
    "clearml": False,
    "comet": False,
    "dvc": False,
    "mlflow": False,
    "raytune": False,
    "tensorboard": False,
    "wandb": False,
    "vscode_msg": False,
    "openvino_msg": False,
}


def testbed_home() -> Path:
    """The testbed's own cache folder: ``$TESTBED_HOME`` or ``~/.cache/mcp-vision-testbed``."""
    configured = os.environ.get("TESTBED_HOME")
    return Path(configured) if configured else Path.home() / ".cache" / "mcp-vision-testbed"


def ultralytics_config_dir() -> Path:
    """The folder handed to Ultralytics as ``YOLO_CONFIG_DIR``."""
    return testbed_home() / "ultralytics"


def ultralytics_user_dir() -> Path:
    """Where Ultralytics keeps its settings and fonts: the ``Ultralytics`` folder inside ``YOLO_CONFIG_DIR``."""
    return ultralytics_config_dir() / "Ultralytics"


def configure_ultralytics(*, quiet: bool = True) -> Path:
    """Set the environment so Ultralytics never reaches the network and writes only where we say.

    Provides a local font (matplotlib's DejaVu Sans, under the names Ultralytics
    would otherwise download) so plotting never fetches Arial.ttf.

    Returns:
        The folder where Ultralytics keeps its settings and looks for fonts.
    """
    config_dir = ultralytics_config_dir()
    user_dir = ultralytics_user_dir()
    user_dir.mkdir(parents=True, exist_ok=True)
    os.environ["YOLO_OFFLINE"] = "1"
    os.environ["YOLO_AUTOINSTALL"] = "False"  # never pip-install missing extras at run time
    os.environ["YOLO_CONFIG_DIR"] = str(config_dir)
    if quiet:
        os.environ["YOLO_VERBOSE"] = "False"
    # check_font() looks here first; a miss makes it resolve and fetch from the network.
    _install_local_font(user_dir)
    return user_dir


def import_ultralytics(*, quiet: bool = True) -> ModuleType:
    """Configure, then import Ultralytics and switch off its telemetry and integrations."""
    configure_ultralytics(quiet=quiet)
    import ultralytics
    from ultralytics.utils import SETTINGS

    changed = {k: v for k, v in _DISABLED_SETTINGS.items() if SETTINGS.get(k) != v}
    if changed:
        SETTINGS.update(changed)  # type: ignore[no-untyped-call]
    return ultralytics


def _install_local_font(config_dir: Path) -> None:
    import matplotlib

    source = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
    for name in _FONT_NAMES:
        target = config_dir / name
        if not target.exists():
            tmp = target.with_suffix(".tmp")
            shutil.copyfile(source, tmp)
            tmp.replace(target)  # atomic, so parallel server processes never see half a font
