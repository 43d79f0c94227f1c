"""Suite-wide settings: property tests are reproducible in CI, exploratory elsewhere."""

import os

from hypothesis import settings

settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")

# Fixtures shared by the tiers.
from receiver import receiver  # noqa: E402,F401
