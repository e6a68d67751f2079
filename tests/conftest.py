"""Test-wide setup.

Keras is only the oracle here, on its torch backend (no TensorFlow anywhere); the variable must be
set before anything imports keras. Test helpers (hand-built models, a real server in a subprocess)
import as `helpers.*`.
"""

import os
import sys
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "torch")
sys.path.insert(0, str(Path(__file__).parent))
