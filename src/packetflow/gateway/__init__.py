"""The gateway: routes packets to reactors by affinity, watches their health, finds them."""
