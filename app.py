"""socialos-app entry point (the logic is in ``socialos_app/cli.py``).

    python app.py [--host HOST] [--port PORT] [--check-config]

Run from a checkout with a plain ``python`` after ``make install``: when the
dependencies aren't importable here, it re-runs itself with ``.venv/bin/python``.
"""

import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

if __name__ == "__main__":
    try:
        from socialos_app.cli import main
    except ImportError as exc:
        venv_python = HERE / ".venv" / "bin" / "python"
        if venv_python.exists() and Path(sys.prefix).resolve() != (HERE / ".venv").resolve():
            os.execv(str(venv_python), [str(venv_python), str(Path(__file__).resolve()), *sys.argv[1:]])
        print(f"socialos-app: {exc.name or exc} is not installed: run `make install` (or use .venv/bin/python)",
              file=sys.stderr)
        sys.exit(2)
    sys.exit(main())
