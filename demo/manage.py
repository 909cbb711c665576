#!/usr/bin/env python
from __future__ import annotations

import os
import sys
from pathlib import Path

if __name__ == "__main__":
    # Run from a checkout: import sesame_db from the repository root.
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "demo_site.settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)
