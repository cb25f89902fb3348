"""How fast training runs here: the benchmark against a naive pipeline and the machine's peak
(bench, pipelines), how its records are read against the speed targets (readings) and the tuning
pass that measures each model's settings (tune)."""
