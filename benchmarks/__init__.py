"""packetflow's benchmarks: ``python -m benchmarks`` prints the figures table."""
