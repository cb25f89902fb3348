"""From runs to findings: the runs as tables (results), statistics and intervals (stats), the
sweeps and the headline comparison (sweeps, headline), and figures (plots, diagrams)."""
