"""The project's benchmarks (python -m bench, or ./bin/bench): figures against DESIGN.md
section 6, as medians of several runs and as ratios to a baseline measured in the same run."""
