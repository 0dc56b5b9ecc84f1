"""Fixtures for tests, benchmarks and the demo: tiny models, the capture simulator, the test
video.

Like ``numpy.testing``: the product code never imports this package (a test checks it).
"""
