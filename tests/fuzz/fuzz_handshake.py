"""atheris harness for the "handshake" target (see atheris_main.py and harness.run_one):

python tests/fuzz/fuzz_handshake.py -max_total_time=30 tests/fuzz/corpus/handshake
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from atheris_main import main  # noqa: E402

if __name__ == "__main__":
    main("handshake")
