"""rqdoctor benchmarks (not tests): ``python -m benchmarks [--quick]``. See docs/performance.md."""
