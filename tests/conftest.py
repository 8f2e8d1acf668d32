from __future__ import annotations

import os

from hypothesis import settings

settings.register_profile("ci", max_examples=200, deadline=None)
settings.register_profile("dev", max_examples=100, deadline=None)
settings.register_profile("stress", max_examples=3000, deadline=None)  # before changing the billing core
settings.load_profile(os.environ.get("SIMPLYTALK_HYPOTHESIS_PROFILE") or ("ci" if os.environ.get("CI") else "dev"))
