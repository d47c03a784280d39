"""The reactor: a worker process that serves PFAP packets over WebSocket."""
