"""Makes the shared test helpers in tests/ (for example devstack_process.py) importable from every test folder."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
