"""The ground floor: where things are (paths), files written atomically (fileio), what the machine
is (machine: CPU kind, threads, GPUs) and the device and precision a model runs at (device).
Nothing here imports another layer of the package."""
