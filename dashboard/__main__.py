"""``python -m agentwatch.dashboard [--api URL] [--port P]``."""

from __future__ import annotations

import sys

from agentwatch.dashboard import main

sys.exit(main(sys.argv[1:]))
