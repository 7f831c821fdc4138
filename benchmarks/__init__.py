"""Performance scripts (not tests): `python -m benchmarks.generate --json`, `python -m benchmarks.train --json`."""
