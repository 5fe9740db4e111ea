"""Paper experiments that combine several runs: drivers, sweep callbacks and result readers."""
