"""Local development: the emulator stack, the functions host, deploy and benchmarks. Never deployed."""
