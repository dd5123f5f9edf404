"""Evaluation: benchmarks, metrics, runner, results, leaderboards."""
