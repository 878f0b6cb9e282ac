"""The loss tests share one brute-force reference; pytest rewrites its asserts too."""

import pytest

pytest.register_assert_rewrite("triplet_reference")
