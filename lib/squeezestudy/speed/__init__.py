"""How fast training runs here: the benchmark against a naive pipeline and the machine's peak
(bench, pipelines) and the tuning pass that measures each model's settings (tune)."""
