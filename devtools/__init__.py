"""Development tools that are not part of the `oasis` package (nothing here is installed with it): used by the
tests, the benchmarks and `oasis demo --object-store swift` from a source checkout."""
