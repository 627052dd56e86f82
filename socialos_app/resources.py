"""Where the app's files are: ``templates/``, ``static/`` and ``conf/``.

In a checkout they are top-level folders beside the package; the built
wheel carries them inside the package (see pyproject.toml), so an installed
``socialos-app`` finds them there.
"""

from pathlib import Path

__all__ = ["root"]

_PACKAGE = Path(__file__).resolve().parent


def root() -> Path:
    """The folder that holds ``templates/``, ``static/`` and ``conf/``."""
    return _PACKAGE if (_PACKAGE / "templates").is_dir() else _PACKAGE.parent
