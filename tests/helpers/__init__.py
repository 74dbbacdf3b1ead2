"""Helpers the test modules share (plain functions and classes; the fixtures are in ``tests/conftest.py``):
``browser`` (headless Chromium), ``cycles`` (a planted next-item pattern for the sequential baselines),
``serving`` (a gate on the server's decodes, a fake clock, waiting on a server state), ``experts`` (lists
re-scored by the memory or the item head are valid), ``pages`` (the runs, report and review store the pages'
browser tests share with their route tests). No test module imports another test module."""
