"""Run ``python -m bastion ARGS`` with one addition: a thread that writes the names in
``sys.modules`` to ``$BASTION_PROBE_MODULES`` whenever ``$BASTION_PROBE_MODULES.want``
appears. Used by bench/idle_memory.py (--modules) and tests/integration/test_idle_imports.py
to see what an idle worker has imported.

    BASTION_PROBE_MODULES=/tmp/mods python bench/probe_modules.py run -c bastion.yaml
"""

import os
import runpy
import sys
import threading
import time


def _watch(out: str) -> None:
    while True:
        if os.path.exists(out + ".want"):
            os.unlink(out + ".want")
            with open(out + ".tmp", "w") as f:
                f.write("\n".join(sorted(sys.modules)) + "\n")
            os.replace(out + ".tmp", out)
        time.sleep(0.02)


if __name__ == "__main__":
    threading.Thread(
        target=_watch, args=(os.environ["BASTION_PROBE_MODULES"],), daemon=True
    ).start()
    sys.argv = ["bastion", *sys.argv[1:]]
    runpy.run_module("bastion", run_name="__main__", alter_sys=True)
