"""Script run by the isolated worker process: ``python -I -S -B _bootstrap.py IN_FD OUT_FD``.

It registers ``rlmx`` and ``rlmx.sandbox`` as bare namespace-like packages so that the
worker imports only the modules it needs (the REPL runtime, the protocol, the
confinement code) and none of the host's: no model SDKs, no engine, no API clients.
"""

import sys
import types
from pathlib import Path


def _bare_package(name: str, path: str) -> None:
    module = types.ModuleType(name)
    module.__path__ = [path]
    sys.modules[name] = module


if __name__ == "__main__":
    import faulthandler

    # A crash in C prints the crashing thread's Python stack, which the model is shown.
    faulthandler.enable(all_threads=False)
    _sandbox_dir = Path(__file__).resolve().parent
    _bare_package("rlmx", str(_sandbox_dir.parent))
    _bare_package("rlmx.sandbox", str(_sandbox_dir))
    from rlmx.sandbox._worker import main

    sys.exit(main(int(sys.argv[1]), int(sys.argv[2])))
