"""`python -m veolia2mqtt`."""

from __future__ import annotations

from veolia2mqtt.cli import main

raise SystemExit(main())
