"""The small untrained model the export, serving and relocalization tests share.

conftest.py builds it once per test process (the `small_model` fixture); the tests that feed it
inputs take its feature size from here.
"""

FEATURE_DIM = 12  # D
UNITS = 8  # l
BILINEAR_RANK = 2  # k
